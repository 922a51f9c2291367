//! Which state store a command uses: the one rule that `copy`, `sync`, `move`, `plan` and `serve`
//! share.
//!
//! In: a `--state PATH|URI` value (or `MONGOFERRY_STATE`) and `--no-state`. Out: a
//! [`StoreChoice`] (memory, a file, a MongoDB database), and from it an opened [`Store`]: a
//! MongoDB one is kept as such (the service's shared history and `--standby` need it), the
//! others as any [`StateStore`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{FileStore, Location, MemoryStore, MongoStore, StateError, StateStore};

/// The store the options name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `--no-state`: nothing is kept after the process.
    Memory,
    /// A file store; `None`: the command's default place (no `--state`).
    File(Option<PathBuf>),
    /// A MongoDB database that several processes share: its URI.
    Mongo(String),
}

/// An opened state store.
pub enum Store {
    Memory(MemoryStore),
    File(FileStore),
    Mongo(MongoStore),
}

impl StoreChoice {
    /// The store of `--state` (`state`) and `--no-state`: `--no-state` wins; a value shaped like
    /// a URI that is not a MongoDB one is refused ([`Location::parse`]).
    pub fn from_options(state: Option<&str>, no_state: bool) -> Result<StoreChoice, StateError> {
        if no_state {
            return Ok(StoreChoice::Memory);
        }
        Ok(match state.map(Location::parse).transpose()? {
            Some(Location::Mongo(uri)) => StoreChoice::Mongo(uri),
            Some(Location::File(path)) => StoreChoice::File(Some(path)),
            None => StoreChoice::File(None),
        })
    }

    /// Opens the store: `file` makes the file store of the path given (`None`: the command's
    /// default); a MongoDB store holds claims for `lease` and waits at most `connect_timeout`
    /// for its server.
    pub async fn open(
        self,
        lease: Duration,
        connect_timeout: Duration,
        file: impl FnOnce(Option<PathBuf>) -> FileStore,
    ) -> Result<Store, StateError> {
        Ok(match self {
            StoreChoice::Memory => Store::Memory(MemoryStore::default()),
            StoreChoice::File(path) => Store::File(file(path)),
            StoreChoice::Mongo(uri) => {
                Store::Mongo(MongoStore::open(&uri, lease, connect_timeout).await?)
            }
        })
    }
}

impl Store {
    /// The store, for the jobs that keep their checkpoints in it.
    pub fn shared(self) -> Arc<dyn StateStore> {
        match self {
            Store::Memory(store) => Arc::new(store),
            Store::File(store) => Arc::new(store),
            Store::Mongo(store) => Arc::new(store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_state_wins_and_a_mistyped_uri_is_refused() {
        let choose = StoreChoice::from_options;
        assert_eq!(
            choose(Some("mongodb://h/db"), true).unwrap(),
            StoreChoice::Memory
        );
        assert_eq!(choose(None, false).unwrap(), StoreChoice::File(None));
        assert_eq!(
            choose(Some("s.db"), false).unwrap(),
            StoreChoice::File(Some("s.db".into()))
        );
        assert!(matches!(
            choose(Some("mongodb://h/db"), false).unwrap(),
            StoreChoice::Mongo(_)
        ));
        assert!(choose(Some("mongo://h/db"), false).is_err());
    }
}
