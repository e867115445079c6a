//! `rightsizer recommend`

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("rightsizer recommend: not built yet")
}
