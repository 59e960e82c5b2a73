//! `tributary-peers host SOCKET`: starts the test run's servers on request and shares them
//! between the run's test processes (see the crate's `run_host` module). `scripts/test` runs it;
//! when `scripts/test` ends, the servers stop.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, socket] = args.as_slice() else {
        usage();
    };
    if command != "host" {
        usage();
    }
    if let Err(error) = tributary_testcontainers::run_host::serve(std::path::Path::new(socket)) {
        eprintln!("tributary-peers: {socket}: {error}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: tributary-peers host SOCKET   (serves until its parent process ends)");
    std::process::exit(2);
}
