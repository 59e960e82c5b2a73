//! `tributary completions SHELL`: the completion script of a shell, on stdout.

use clap::CommandFactory;
use clap_complete::Shell;
use tributary::{Error, Result};

/// Options of `tributary completions`.
#[derive(clap::Args)]
#[command(after_help = "Install, for example:
  bash: tributary completions bash > ~/.local/share/bash-completion/completions/tributary
  zsh:  tributary completions zsh > ~/.zfunc/_tributary   (with fpath+=~/.zfunc before compinit)
  fish: tributary completions fish > ~/.config/fish/completions/tributary.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Writes the script to stdout.
pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "tributary", &mut script);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing the completion script", e))
}
