//! `rightsizer serve`

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("rightsizer serve: not built yet")
}
