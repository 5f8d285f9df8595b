//! `svcprovider`: parse the command line and run it. See `lib.rs`.

use std::io::Read;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use svcprovider::config::{Cli, Command, SecretCommand, ServeArgs, StoreArgs, StoreUrl};
use svcprovider::crypto::SecretKey;
use svcprovider::store::{postgres::PgStore, sqlite::SqliteStore, Quotas, Storage};

fn main() -> anyhow::Result<()> {
    bismuth_daemon::init_tracing();
    let cli = Cli::parse();
    // One thread: an idle svcprovider runs next to every container.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Secret(cmd) => secret(cmd).await,
            Command::Keygen => {
                println!("{}", SecretKey::generate().to_hex());
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let quotas = args.quotas()?;
    let (url, key) = args.store.parse()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = bismuth_daemon::shutdown_on_signals()?;
    tracing::info!(addr = %args.listen, group = %args.store.group, "svcprovider serving");
    match url {
        StoreUrl::Sqlite(dir) => {
            let store = SqliteStore::open(&dir, &args.store.group, quotas, key)?;
            let api = svcprovider::api::Api::new(store, args.token, args.max_value_bytes);
            svcprovider::serve(listener, api, shutdown).await;
        }
        StoreUrl::Postgres(url) => {
            let store = PgStore::connect(&url, &args.store.group, quotas, key).await?;
            let api = svcprovider::api::Api::new(store, args.token, args.max_value_bytes);
            svcprovider::serve(listener, api, shutdown).await;
        }
    }
    Ok(())
}

async fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    let (args, key, value) = match cmd {
        SecretCommand::Set { store, key } => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .context("cannot read the secret from stdin")?;
            (store, key, Some(Bytes::from(value)))
        }
        SecretCommand::Delete { store, key } => (store, key, None),
    };
    svcprovider::key::validate(&key).map_err(anyhow::Error::msg)?;
    let (url, cluster_key) = args.parse()?;
    anyhow::ensure!(
        cluster_key.is_some() || value.is_none(),
        "setting a secret needs --secret-key-file"
    );
    match url {
        StoreUrl::Sqlite(dir) => {
            write_secret(
                SqliteStore::open(&dir, &args.group, Quotas::default(), cluster_key)?,
                &args,
                &key,
                value,
            )
            .await
        }
        StoreUrl::Postgres(url) => {
            let store = PgStore::connect(&url, &args.group, Quotas::default(), cluster_key).await?;
            write_secret(store, &args, &key, value).await
        }
    }
}

async fn write_secret(
    store: impl Storage,
    args: &StoreArgs,
    key: &str,
    value: Option<Bytes>,
) -> anyhow::Result<()> {
    match value {
        Some(v) => {
            store.secret_put(key, v).await?;
            println!("secret {key:?} set for group {}", args.group);
        }
        None => {
            anyhow::ensure!(
                store.secret_delete(key).await?,
                "secret {key:?} does not exist in group {}",
                args.group
            );
            println!("secret {key:?} deleted from group {}", args.group);
        }
    }
    Ok(())
}
