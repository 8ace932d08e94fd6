//! Operating the binary: the command-line client of the REST API,
//! completions, the man page, the version, and the shipped examples.

mod cli;
mod examples;
