//! Where accepted items go after they are stored. [`Bus`] is the in-process default (the WebSocket reads it); a
//! Redis publisher implements [`Fanout`] too (one channel per asset and per priority, see [`channels`]).

pub mod redis;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::item::{Item, WsMessage};

/// A destination for accepted items. `publish` must not block: a slow destination queues or drops (and counts
/// it), it never holds up the pipeline.
pub trait Fanout: Send + Sync + 'static {
    /// A name for logs and metrics (`bus`, `redis`).
    fn name(&self) -> &'static str;
    fn publish(&self, item: &Arc<Item>);
    /// An item's new version after an edit at its source (the same `id`, `version` one higher). By default it is
    /// published like an item: the version says it is an edit.
    fn edit(&self, item: &Arc<Item>) {
        self.publish(item)
    }
    /// An item deleted at its source (as it was). By default not passed on.
    fn delete(&self, _item: &Arc<Item>) {}
    /// Adds the destination's own metrics to `/metrics` (none by default).
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// The channel names an item belongs to on a pub/sub fan-out: `social:asset:<SYMBOL>` for each asset it mentions,
/// `social:priority:<low|normal|high>`, and `social:all`.
pub fn channels(item: &Item) -> Vec<String> {
    let mut v: Vec<String> = item.assets.iter().map(|a| format!("social:asset:{a}")).collect();
    v.push(format!("social:priority:{}", item.priority.as_str()));
    v.push("social:all".to_string());
    v
}

/// What the bus carries: an item, its new version after an edit, or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    New(Arc<Item>),
    Edit(Arc<Item>),
    Deleted(Arc<Item>),
}

impl Published {
    /// The item (for a deletion, as it was).
    pub fn item(&self) -> &Item {
        match self {
            Published::New(i) | Published::Edit(i) | Published::Deleted(i) => i,
        }
    }

    /// The message a WebSocket client gets.
    pub fn message(&self) -> WsMessage<&Item> {
        match self {
            Published::New(i) => WsMessage::Item(i),
            Published::Edit(i) => WsMessage::Edit(i),
            Published::Deleted(i) => WsMessage::Deleted { id: i.id.clone(), source: i.source.clone() },
        }
    }
}

/// Items kept for a subscriber that falls behind before it skips ahead.
pub const BUS_QUEUE: usize = 8192;

/// The in-process bus: a broadcast channel of shared items. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus { tx: broadcast::channel(BUS_QUEUE).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }
}

impl Fanout for Bus {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn publish(&self, item: &Arc<Item>) {
        // No subscriber is fine.
        let _ = self.tx.send(Arc::new(Published::New(item.clone())));
    }

    fn edit(&self, item: &Arc<Item>) {
        let _ = self.tx.send(Arc::new(Published::Edit(item.clone())));
    }

    fn delete(&self, item: &Arc<Item>) {
        let _ = self.tx.send(Arc::new(Published::Deleted(item.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Priority;

    #[test]
    fn channels_per_asset_and_priority() {
        let item = Item {
            id: "1".into(),
            source: "s".into(),
            kind: "rss".into(),
            author: "a".into(),
            text: "t".into(),
            url: None,
            at_ms: 0,
            received_ms: 0,
            language: "en".into(),
            assets: vec!["BTC".into(), "ETH".into()],
            sentiment: 0.0,
            score: 0.0,
            priority: Priority::High,
            version: 1,
            edited_ms: None,
            content_hash: 0,
            simhash: 0,
        };
        assert_eq!(channels(&item), vec!["social:asset:BTC", "social:asset:ETH", "social:priority:high", "social:all"]);
    }

    #[tokio::test]
    async fn bus_delivers_to_subscribers() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let item = Arc::new(Item {
            id: "x".into(),
            source: "s".into(),
            kind: "rss".into(),
            author: "a".into(),
            text: "t".into(),
            url: None,
            at_ms: 1,
            received_ms: 1,
            language: "und".into(),
            assets: vec![],
            sentiment: 0.0,
            score: 0.0,
            priority: Priority::Low,
            version: 1,
            edited_ms: None,
            content_hash: 0,
            simhash: 0,
        });
        bus.publish(&item);
        bus.edit(&item);
        bus.delete(&item);
        assert_eq!(*rx.recv().await.unwrap(), Published::New(item.clone()));
        assert_eq!(*rx.recv().await.unwrap(), Published::Edit(item.clone()));
        let d = rx.recv().await.unwrap();
        let j = serde_json::to_value(d.message()).unwrap();
        assert_eq!(j, serde_json::json!({"type": "deleted", "id": "x", "source": "s"}));
        let j = serde_json::to_value(Published::Edit(item.clone()).message()).unwrap();
        assert_eq!((j["type"].as_str(), j["id"].as_str(), j["version"].as_u64()), (Some("edit"), Some("x"), Some(1)));
    }
}
