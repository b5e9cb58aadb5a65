//! Writes layerfs's man pages from its command-line definition (clap_mangen):
//! `layerfs.1` and one `layerfs-COMMAND.1` per subcommand, into OUTDIR.
//!
//! `scripts/man.sh [OUTDIR]` runs it (`cargo run --release --example man -- OUTDIR`).

use clap::CommandFactory;

fn main() -> std::process::ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: man OUTDIR");
        return std::process::ExitCode::FAILURE;
    };
    let out = std::path::PathBuf::from(out);
    let res = std::fs::create_dir_all(&out)
        .and_then(|()| clap_mangen::generate_to(layerfs::cli::Cli::command(), &out));
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man: {}: {e}", out.display());
            std::process::ExitCode::FAILURE
        }
    }
}
