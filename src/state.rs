//! What every handler can reach: the store, keys, the clock, the bus.

use std::sync::Arc;

use onecard_actors::clock::Clock;
use onecard_actors::keys::Keys;
use onecard_schema::Store;

use crate::bus::Bus;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub clock: Arc<dyn Clock>,
    pub bus: Bus,
    /// Hash of `ONECARD_ROOT_TOKEN`, when set (then it is the only root token).
    pub env_root_hash: Option<[u8; 32]>,
    /// Base URL for links people open (binding links).
    pub public_url: String,
}
