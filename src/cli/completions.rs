//! `layerfs completions SHELL`: shell completions, generated from the command line's
//! definition (clap_complete), so they never fall behind it.

use clap::CommandFactory;

use super::Cli;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs completions bash > /usr/share/bash-completion/completions/layerfs
  layerfs completions zsh > /usr/local/share/zsh/site-functions/_layerfs
  layerfs completions fish > ~/.config/fish/completions/layerfs.fish
  source <(layerfs completions bash)                 # this shell only")]
pub struct Args {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "layerfs", &mut std::io::stdout());
    Ok(())
}
