//! The `switchboard` binary: the command line (`cli`), which hands over to the library.
//! `anyhow` lives here only.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
