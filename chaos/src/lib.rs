//! `mimori-chaos`: the chaos runner and the history checker.
//!
//! The runner (`runner`) starts a cluster of real `mimorid` processes (`cluster`),
//! runs a concurrent client workload through their gateways (`workload`), and lets
//! the nemesis (`nemesis`) kill nodes and actors, freeze processes, cut links and
//! move leaders and replicas, chosen by a seed. Everything the clients did is
//! recorded (`history`) and checked at the end (`checker`): per-key
//! linearizability (`linearizability`), every acknowledged write present, and
//! every shard's replicas identical.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod netns;
pub mod report;
pub mod runner;
pub mod workload;
