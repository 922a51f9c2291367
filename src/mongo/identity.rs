//! Which deployment a client talks to, by what its servers say about themselves.
//!
//! In: a connected [`Client`]. Out: a [`Deployment`], the facts that identify the data behind
//! it, and [`Deployment::may_share_data`], the one comparison a job makes before it writes.
//!
//! Host names prove nothing: `localhost:P`, `127.0.0.1:P` and `[::ffff:127.0.0.1]:P` are one
//! server, and two members of one replica set hold the same data under different names. So the
//! facts are the servers' own: the process id of `hello`'s `topologyVersion` (one per running
//! server), the replica set's `replicaSetId` (one per set, from `replSetGetConfig` where the user
//! may read it), the set's name with its members as the set lists them, and on a sharded cluster
//! its `clusterId` and each shard's set. A fact that cannot be read is left out; a deployment of
//! which nothing could be learnt is taken as possibly the same as any other, since a wrong
//! "different" is what deletes data.

use std::collections::BTreeSet;

use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::Client;

use super::{describe, MongoError, Side};

/// One thing a server says about the data it serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fact {
    /// `topologyVersion.processId`: this very server process.
    Process(ObjectId),
    /// A replica set's `settings.replicaSetId`.
    ReplicaSetId(ObjectId),
    /// A replica set as its members list it: its name and one member's address as configured.
    Member { set: String, host: String },
    /// A sharded cluster's `clusterId`.
    Cluster(ObjectId),
}

/// What identifies the deployment behind a client (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    facts: BTreeSet<Fact>,
}

impl Deployment {
    /// False only when both deployments are known and share no fact: then no write through one
    /// can change the data of the other.
    pub fn may_share_data(&self, other: &Deployment) -> bool {
        self.facts.is_empty() || other.facts.is_empty() || !self.facts.is_disjoint(&other.facts)
    }

    /// The facts `hello` (and, on a sharded cluster, `listShards`) gives.
    fn from_hello(hello: &Document, shards: &[Document]) -> Deployment {
        let mut facts = BTreeSet::new();
        if let Ok(process) = hello
            .get_document("topologyVersion")
            .and_then(|t| t.get_object_id("processId"))
        {
            facts.insert(Fact::Process(process));
        }
        if let Ok(set) = hello.get_str("setName") {
            facts.extend(members(set, hello));
        }
        // A shard's set, `name/host1,host2`, holds part of the cluster's data.
        for shard in shards {
            if let Some((set, hosts)) = shard.get_str("host").ok().and_then(|h| h.split_once('/')) {
                facts.extend(hosts.split(',').map(|host| Fact::Member {
                    set: set.to_string(),
                    host: host.to_string(),
                }));
            }
        }
        Deployment { facts }
    }
}

/// The members a replica set's `hello` lists: `hosts`, `passives` and `arbiters` as configured.
fn members(set: &str, hello: &Document) -> Vec<Fact> {
    ["hosts", "passives"]
        .iter()
        .filter_map(|field| hello.get_array(field).ok())
        .flatten()
        .filter_map(|host| host.as_str())
        .map(|host| Fact::Member {
            set: set.to_string(),
            host: host.to_string(),
        })
        .collect()
}

/// Asks the deployment behind `client` who it is; only `hello` must answer, the other facts are
/// read where the user's roles allow.
pub async fn identify(client: &Client, side: Side) -> Result<Deployment, MongoError> {
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| MongoError::Command {
            side,
            ns: super::Namespace::new("admin", "$cmd"),
            op: "hello",
            reason: describe(&e),
        })?;
    let sharded = hello.get_str("msg") == Ok("isdbgrid");
    let shards = match sharded {
        true => admin
            .run_command(doc! { "listShards": 1 })
            .await
            .ok()
            .and_then(|r| r.get_array("shards").ok().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.as_document().cloned())
            .collect(),
        false => Vec::new(),
    };
    let mut deployment = Deployment::from_hello(&hello, &shards);
    if hello.contains_key("setName") {
        if let Ok(config) = admin.run_command(doc! { "replSetGetConfig": 1 }).await {
            if let Ok(id) = config
                .get_document("config")
                .and_then(|c| c.get_document("settings"))
                .and_then(|s| s.get_object_id("replicaSetId"))
            {
                deployment.facts.insert(Fact::ReplicaSetId(id));
            }
        }
    }
    if sharded {
        let version = client
            .database("config")
            .collection::<Document>("version")
            .find_one(doc! {})
            .await;
        if let Ok(Some(id)) = version.map(|v| v.and_then(|v| v.get_object_id("clusterId").ok())) {
            deployment.facts.insert(Fact::Cluster(id));
        }
    }
    Ok(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(process: ObjectId, set: Option<&str>, hosts: &[&str]) -> Document {
        let mut hello = doc! { "topologyVersion": { "processId": process, "counter": 0_i64 } };
        if let Some(set) = set {
            hello.insert("setName", set);
            hello.insert("hosts", hosts.to_vec());
        }
        hello
    }

    #[test]
    fn one_process_is_one_deployment_whatever_its_name() {
        let process = ObjectId::new();
        let a = Deployment::from_hello(&hello(process, None, &[]), &[]);
        let b = Deployment::from_hello(&hello(process, None, &[]), &[]);
        assert!(a.may_share_data(&b));
    }

    #[test]
    fn two_members_of_one_set_share_data() {
        let hosts = ["db1:27017", "db2:27017"];
        let a = Deployment::from_hello(&hello(ObjectId::new(), Some("rs0"), &hosts), &[]);
        let b = Deployment::from_hello(&hello(ObjectId::new(), Some("rs0"), &hosts), &[]);
        assert!(a.may_share_data(&b));
    }

    #[test]
    fn a_cluster_shares_data_with_its_shards() {
        let mongos = doc! { "msg": "isdbgrid" };
        let shards = [doc! { "_id": "s0", "host": "rs0/db1:27017,db2:27017" }];
        let cluster = Deployment::from_hello(&mongos, &shards);
        let shard =
            Deployment::from_hello(&hello(ObjectId::new(), Some("rs0"), &["db2:27017"]), &[]);
        assert!(cluster.may_share_data(&shard));
    }

    #[test]
    fn different_processes_and_sets_are_different() {
        let a = Deployment::from_hello(&hello(ObjectId::new(), Some("rs"), &["h:1"]), &[]);
        let b = Deployment::from_hello(&hello(ObjectId::new(), Some("rs"), &["h:2"]), &[]);
        assert!(!a.may_share_data(&b));
    }

    #[test]
    fn an_unknown_deployment_may_be_any() {
        let known = Deployment::from_hello(&hello(ObjectId::new(), None, &[]), &[]);
        assert!(Deployment::default().may_share_data(&known));
        assert!(known.may_share_data(&Deployment::default()));
    }
}
