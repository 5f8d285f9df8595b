//! What the containers share: the rules table (put back whole, with every
//! container's element, when it was deleted or flushed or lost an element)
//! and leftovers no container owns (host-side veths in our group and range
//! whose container is unknown).

use std::collections::HashSet;

use bismuth_controller::Action;
use tracing::warn;

use super::Error;
use crate::net;
use crate::node::Node;

pub async fn converge(node: &Node) -> Result<Action, Error> {
    let fw = &node.firewall;
    if !fw.intact().await {
        warn!(table = %fw.table(), "the rules table was changed or removed; installing it again");
        fw.reinstall()
            .await
            .map_err(|source| Error::Firewall { cid: None, source })?;
    }
    let known: HashSet<String> = node
        .all()
        .iter()
        .map(|h| net::names(&node.cfg.instance, h.cid).1)
        .collect();
    for link in net::our_links(&node.cfg.pool).await {
        if !known.contains(&link) {
            warn!(%link, "removing a veth no container owns");
            net::delete_link(&link).await;
        }
    }
    Ok(Action::done())
}
