//! `verinfer models`: fetch and list language models.

use anyhow::Context;
use clap::{Args, Subcommand};
use verinfer_inference::models;

/// `verinfer models ...`
#[derive(Args, Debug)]
pub(crate) struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// Model subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum ModelsCommand {
    /// Download a known model (pinned version, SHA-256 checked) into the model cache.
    Fetch {
        /// Model name (see `verinfer models list`).
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
    /// Show known models and the files in the model cache, with their model ids.
    List,
    /// Print the file path a model name or path resolves to.
    Path {
        /// Model name or GGUF file path.
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
}

/// Runs a models command.
pub(crate) fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::Fetch { name } => {
            let path = models::fetch(&name, &mut |msg| eprintln!("{msg}"))
                .with_context(|| format!("fetching model {name:?}"))?;
            println!("{}", path.display());
        }
        ModelsCommand::List => {
            let dir = models::models_dir()?;
            let cached = models::list()?;
            println!("model cache: {}", dir.display());
            println!(
                "{:<14} {:<9} {:<64} PATH",
                "NAME", "STATUS", "MODEL ID (SHA-256)"
            );
            for k in models::KNOWN_MODELS {
                let here = cached.iter().find(|c| c.model_id == k.sha256);
                let (status, path) = match here {
                    Some(c) => ("fetched", c.path.display().to_string()),
                    None => ("known", format!("(run `verinfer models fetch {}`)", k.name)),
                };
                println!("{:<14} {:<9} {:<64} {path}", k.name, status, k.sha256);
            }
            for c in cached.iter().filter(|c| c.name.is_none()) {
                println!(
                    "{:<14} {:<9} {:<64} {}",
                    "-",
                    "file",
                    c.model_id,
                    c.path.display()
                );
            }
        }
        ModelsCommand::Path { name } => {
            println!("{}", models::resolve(&name)?.display());
        }
    }
    Ok(())
}
