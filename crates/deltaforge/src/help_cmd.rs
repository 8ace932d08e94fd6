//! `deltaforge completions SHELL` and `deltaforge man`: shell completion
//! scripts (`clap_complete`) and the man page (`clap_mangen`), both
//! generated from the command-line definition `cli` hands in, so they never
//! go out of date. It writes to standard output (or `--out-dir`) only.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// Prints the completion script of `cmd` (the whole command line) for `shell`.
pub fn completions(shell: Shell, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "deltaforge", &mut out);
    print_all(&out)
}

/// Prints the man page of `cmd` (roff), or writes one page per command
/// (`deltaforge.1`, `deltaforge-run.1`, ...) into `out_dir`.
pub fn man(out_dir: Option<&Path>, cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let cmd = cmd.about(ABOUT);
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).context("rendering the man page")?;
            return print_all(&out);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one-line description in the man page's NAME section.
const ABOUT: &str = "change data capture from MySQL/MariaDB and PostgreSQL to files, Kafka, Redis, NATS and HTTP";

/// Writes `bytes` to standard output; a reader that went away (`| head`)
/// is not an error.
pub(crate) fn print_all(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn completions_parse_the_shell_and_name_the_subcommands() {
        for sh in ["bash", "zsh", "fish"] {
            let cli = Cli::try_parse_from(["deltaforge", "completions", sh]).unwrap();
            assert!(matches!(cli.command, Command::Completions { .. }), "{sh}");
        }
        assert!(Cli::try_parse_from(["deltaforge", "completions", "cmd.exe"]).is_err());
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "deltaforge", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("pipelines") && text.contains("completions"), "{text}");
    }

    #[test]
    fn the_man_page_is_roff_with_every_subcommand() {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH deltaforge"), "{text}");
        for sub in ["run", "validate", "status", "pipelines", "completions", "man"] {
            assert!(text.contains(sub), "{sub} missing in\n{text}");
        }
    }

    #[test]
    fn the_version_names_a_commit() {
        let v = Cli::command().render_version();
        assert!(v.contains(env!("CARGO_PKG_VERSION")) && v.contains("commit "), "{v}");
    }
}
