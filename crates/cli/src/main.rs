//! `strata`: save and restore project directories as snapshot streams.

mod cli;
mod commands;
mod output;

fn main() {
    std::process::exit(cli::run());
}
