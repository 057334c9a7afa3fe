//! `kelson images`: image archives for the node's containerd.

use std::path::PathBuf;

use crate::DEFAULT_DATA_DIR;

#[derive(clap::Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(clap::Subcommand)]
enum ImagesCommand {
    /// Import image archives (OCI or docker-archive tarballs) into the
    /// node's containerd; a temporary containerd is started on the data
    /// directory when the agent is not running
    Import {
        /// Data directory of the node
        #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
        data_dir: PathBuf,
        /// The archives
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub async fn run(args: ImagesArgs) -> anyhow::Result<()> {
    match args.command {
        ImagesCommand::Import { data_dir, files } => {
            let names = kelson_agent::images::import_many(&data_dir, &files).await?;
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        images: ImagesArgs,
    }

    #[test]
    fn import_takes_files_and_a_data_dir() {
        let c = Cli::try_parse_from(["images", "import", "--data-dir", "/d", "a.tar", "b.tar"])
            .unwrap();
        let ImagesCommand::Import { data_dir, files } = c.images.command;
        assert_eq!(data_dir, PathBuf::from("/d"));
        assert_eq!(files, vec![PathBuf::from("a.tar"), PathBuf::from("b.tar")]);
        // At least one archive.
        assert!(Cli::try_parse_from(["images", "import"]).is_err());
    }
}
