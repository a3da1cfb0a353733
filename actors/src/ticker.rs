//! The Ticker: one timer for the whole node that sends `Tick` to every local Raft
//! group, so a node with hundreds of groups runs one timer, not hundreds.

use crate::node::registry::ShardRegistry;
use crate::shard::ShardReplicaMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;

pub enum TickerMsg {
    Tick,
}

impl ractor::Message for TickerMsg {}

pub struct TickerArgs {
    pub registry: Arc<ShardRegistry>,
    pub tick_interval_ms: u64,
}

pub struct TickerState {
    registry: Arc<ShardRegistry>,
    timer: tokio::task::JoinHandle<()>,
}

pub struct TickerActor;

impl Actor for TickerActor {
    type Msg = TickerMsg;
    type State = TickerState;
    type Arguments = TickerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let timer = myself.send_interval(Duration::from_millis(args.tick_interval_ms), || {
            TickerMsg::Tick
        });
        Ok(TickerState {
            registry: args.registry,
            timer,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.timer.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TickerMsg::Tick => {
                for slot in state.registry.all_slots() {
                    if let Some(actor) = slot.actor() {
                        let _ = actor.send_message(ShardReplicaMsg::Tick);
                    }
                }
            }
        }
        Ok(())
    }
}
