//! Programs that show how to use tributary, one per file in `src/bin/`; see `README.md` beside
//! this crate. The library part is only what the programs share: reading their arguments.
#![warn(missing_docs)]

/// A program's arguments: positional ones, and `--name value` options.
#[derive(Debug, Default)]
pub struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    /// The arguments this process was started with.
    pub fn from_env() -> Self {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Self {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.strip_prefix("--") {
                Some(name) => {
                    let value = args.next().unwrap_or_default();
                    parsed.options.push((name.to_owned(), value));
                }
                None => parsed.positional.push(arg),
            }
        }
        parsed
    }

    /// The backend URL: the first positional argument, or `default`.
    pub fn url_or(&self, default: &str) -> String {
        self.positional
            .first()
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// The text given as `--name value`, or `default`.
    pub fn text(&self, name: &str, default: &str) -> String {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or_else(|| default.to_owned(), |(_, value)| value.clone())
    }

    /// The number given as `--name N`, or `default`; exits with a message if it is not a number.
    pub fn number(&self, name: &str, default: usize) -> usize {
        match self.options.iter().rev().find(|(n, _)| n == name) {
            None => default,
            Some((_, value)) => value.parse().unwrap_or_else(|_| {
                eprintln!("--{name} wants a number, got `{value}`");
                std::process::exit(2)
            }),
        }
    }
}
