//! Opening producers and consumers: a topic's partitions (checked, or looked up under
//! `auto_create`), a producer per partition, a group's subscription placed at its start and a
//! member per partition under one driver task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use pulsar::consumer::InitialPosition;
use pulsar::{SubType, producer::ProducerOptions};
use tokio::sync::{Mutex, Notify, mpsc};
use tributary::backend::CloseGate;
use tributary::{Consumer, ConsumerOptions, Error, Producer, Result, StartPosition};

use super::PulsarBackend;
use crate::config::{SubscriptionType, TopicName};
use crate::consumer::{
    self, Command, Driver, PartitionQueue, PulsarAcks, PulsarConsumer, Shared, State,
};
use crate::error::{map, timed_out};
use crate::position::MessagePosition;
use crate::producer;

impl PulsarBackend {
    /// One `pulsar::Producer` per partition of the stream's topic.
    pub(super) async fn open_producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        let topic = self.config.topic(stream)?;
        let partitions = self.partitions_for_use(&topic).await?;
        let (topics, indexes) = Self::slots(&topic, partitions);
        let options = if self.config.batching() {
            ProducerOptions {
                batch_size: Some(self.config.batch_size),
                batch_byte_size: Some(self.config.batch_bytes),
                batch_timeout: Some(self.config.batch_delay),
                block_queue_if_full: true,
                ..ProducerOptions::default()
            }
        } else {
            ProducerOptions {
                block_queue_if_full: true,
                ..ProducerOptions::default()
            }
        };
        let builds = topics.iter().zip(&indexes).map(|(name, &index)| {
            let build = self
                .client
                .producer()
                .with_topic(name)
                .with_options(options.clone())
                .build();
            async move {
                let what = format!("create a producer for `{name}`");
                match tokio::time::timeout(self.config.operation_timeout, build).await {
                    Ok(Ok(inner)) => Ok(producer::PartitionProducer {
                        inner: Mutex::new(inner),
                        topic: name.clone(),
                        suspect: AtomicBool::new(false),
                        index,
                    }),
                    Ok(Err(e)) => Err(map(e, &what)),
                    Err(_) => Err(timed_out(
                        &what,
                        self.config.operation_timeout,
                        "operation_timeout",
                    )),
                }
            }
        });
        let partitions = futures::future::try_join_all(builds).await?;
        Ok(Box::new(producer::PulsarProducer {
            stream: stream.to_owned(),
            client: self.client.clone(),
            options,
            partitions,
            max_event_bytes: self.max_event_bytes,
            broker_limit: self.broker_limit,
            operation_timeout: self.config.operation_timeout,
            batch_bytes: self.config.batching().then_some(self.config.batch_bytes),
            next: AtomicUsize::new(0),
            gate: CloseGate::new(format!("producer for `{stream}`")),
        }))
    }

    /// The group's subscription placed, a member per partition subscribed, and the driver
    /// task started.
    pub(super) async fn open_consumer(
        &self,
        stream: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        options.validate()?;
        let topic = self.config.topic(stream)?;
        let partitions = self.partitions_for_use(&topic).await?;
        self.place_subscription(&topic, partitions, &options.group, &options.start)
            .await?;
        let (topics, indexes) = Self::slots(&topic, partitions);
        let subscribe = Arc::new(consumer::driver::Subscribe {
            client: self.client.clone(),
            stream: stream.to_owned(),
            topics,
            indexes,
            subscription: options.group.clone(),
            sub_type: match self.config.subscription {
                SubscriptionType::Failover => SubType::Failover,
                SubscriptionType::Shared => SubType::Shared,
            },
            consumer_name: consumer_name(),
            initial: match options.start {
                StartPosition::Latest => InitialPosition::Latest,
                _ => InitialPosition::Earliest,
            },
            receiver_queue: self.config.receiver_queue,
            timeout: self.config.operation_timeout,
            admin: self.admin.clone(),
            handover_grace: match self.config.subscription {
                SubscriptionType::Failover => self.config.handover_grace,
                SubscriptionType::Shared => Duration::ZERO,
            },
        });
        let n = subscribe.topics.len();
        let members =
            futures::future::try_join_all((0..n).map(|slot| subscribe.member(slot))).await?;
        let shared = Arc::new(Shared {
            state: parking_lot::Mutex::new(State {
                partitions: members
                    .iter()
                    .map(|member| PartitionQueue {
                        acker: member.consumer.acker(),
                        ..PartitionQueue::default()
                    })
                    .collect(),
                cursor: 0,
                queued: 0,
                ready_cap: self.config.receiver_queue.max(1) as usize,
                in_flight: 0,
                max_in_flight: options.max_in_flight.max(1),
                flight: Default::default(),
                failure: None,
                stopped: false,
                lag: None,
                sleepers: 0,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            nack_delay: self.config.nack_delay,
            nack_max_delay: self.config.nack_max_delay,
        });
        let (to_driver, commands) = mpsc::unbounded_channel::<Command>();
        let driver = Driver::new(
            shared.clone(),
            commands,
            to_driver.downgrade(),
            members,
            subscribe,
        );
        tokio::spawn(driver.run());
        let acks = Arc::new(PulsarAcks {
            shared: shared.clone(),
            to_driver: to_driver.clone(),
        });
        Ok(Box::new(PulsarConsumer {
            stream: stream.to_owned(),
            shared,
            to_driver,
            acks,
            closed: AtomicBool::new(false),
            partitioned: partitions > 0,
        }))
    }

    /// Partition count for producing or consuming: checked through the admin API, or, with
    /// `auto_create`, asked of the broker (which creates the topic by its own policy).
    async fn partitions_for_use(&self, topic: &TopicName) -> Result<u32> {
        if !self.config.auto_create {
            return self.require(topic).await;
        }
        let lookup = self.client.lookup_partitioned_topic_number(topic.full());
        match tokio::time::timeout(self.config.operation_timeout, lookup).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(map(e, &format!("look up `{}`", topic.full()))),
            Err(_) => Err(timed_out(
                &format!("look up `{}`", topic.full()),
                self.config.operation_timeout,
                "operation_timeout",
            )),
        }
    }

    /// Full topic names and Pulsar partition indexes of a topic's partitions.
    fn slots(topic: &TopicName, partitions: u32) -> (Vec<String>, Vec<i32>) {
        if partitions == 0 {
            (vec![topic.full()], vec![-1])
        } else {
            (
                (0..partitions).map(|i| topic.partition(i)).collect(),
                (0..partitions as i32).collect(),
            )
        }
    }

    /// Creates the group's subscription at a time or position, if it does not exist yet.
    async fn place_subscription(
        &self,
        topic: &TopicName,
        partitions: u32,
        group: &str,
        start: &StartPosition,
    ) -> Result<()> {
        let locals: Vec<(String, i32)> = if partitions == 0 {
            vec![(topic.local.clone(), -1)]
        } else {
            (0..partitions as i32)
                .map(|i| (format!("{}-partition-{i}", topic.local), i))
                .collect()
        };
        match start {
            StartPosition::Timestamp(t) => {
                for (local, _) in &locals {
                    if self
                        .admin
                        .create_subscription(topic, local, group, -1, -1)
                        .await?
                    {
                        self.admin
                            .reset_cursor(topic, local, group, t.as_millis())
                            .await?;
                    }
                }
            }
            StartPosition::Position(p) => {
                let at = MessagePosition::parse(p)?;
                if !locals.iter().any(|(_, index)| *index == at.partition) {
                    return Err(Error::config(format!(
                        "position `{p}` names partition {}, which `{}` does not have",
                        at.partition,
                        topic.full()
                    )));
                }
                for (local, index) in &locals {
                    let (ledger, entry) = if *index == at.partition {
                        (at.ledger as i64, at.entry as i64)
                    } else {
                        (-1, -1)
                    };
                    self.admin
                        .create_subscription(topic, local, group, ledger, entry)
                        .await?;
                }
            }
            StartPosition::Earliest | StartPosition::Latest => {}
        }
        Ok(())
    }
}

/// A name no other member of any group uses: Failover orders members by name.
fn consumer_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tributary-{}-{}-{nanos:08x}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed)
    )
}
