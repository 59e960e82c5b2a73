//! A backend that hands everything to another one, except that a test can look at, refuse or
//! wrap the producers and consumers it opens: how these tests count what a route opens, record
//! the batches it writes or inject a fault no real server can be asked for (a commit that never
//! returns), without writing a whole `Backend` each time.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use tributary::{
    Backend, Capabilities, Consumer, ConsumerOptions, Producer, Result, StreamInfo, StreamSpec,
};

type Gate = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;
type WrapProducer = Box<dyn Fn(Box<dyn Producer>) -> Box<dyn Producer> + Send + Sync>;
type WrapConsumer = Box<dyn Fn(Box<dyn Consumer>) -> Box<dyn Consumer> + Send + Sync>;

/// `inner` with hooks on opening producers and consumers; everything else goes straight
/// through.
pub struct Intercepting {
    inner: Arc<dyn Backend>,
    scheme: &'static str,
    before_producer: Option<Gate>,
    wrap_producer: Option<WrapProducer>,
    before_consumer: Option<Gate>,
    wrap_consumer: Option<WrapConsumer>,
}

impl Intercepting {
    /// Passes everything to `inner` and reports `inner`'s scheme until told otherwise.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            scheme: inner.scheme(),
            inner,
            before_producer: None,
            wrap_producer: None,
            before_consumer: None,
            wrap_consumer: None,
        }
    }

    /// The scheme the backend reports (the one a test registered it under, say).
    pub fn scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }

    /// Runs before every producer is opened (given the stream); an error is returned instead
    /// of opening one.
    pub fn before_producer(
        mut self,
        gate: impl Fn(&str) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.before_producer = Some(Box::new(gate));
        self
    }

    /// Wraps every producer opened.
    pub fn wrap_producer(
        mut self,
        wrap: impl Fn(Box<dyn Producer>) -> Box<dyn Producer> + Send + Sync + 'static,
    ) -> Self {
        self.wrap_producer = Some(Box::new(wrap));
        self
    }

    /// Runs before every consumer is opened (a group joined), given the stream; an error is
    /// returned instead of opening one.
    pub fn before_consumer(
        mut self,
        gate: impl Fn(&str) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.before_consumer = Some(Box::new(gate));
        self
    }

    /// Wraps every consumer opened.
    pub fn wrap_consumer(
        mut self,
        wrap: impl Fn(Box<dyn Consumer>) -> Box<dyn Consumer> + Send + Sync + 'static,
    ) -> Self {
        self.wrap_consumer = Some(Box::new(wrap));
        self
    }

    /// As a backend a route or the registry can take.
    pub fn into_backend(self) -> Arc<dyn Backend> {
        Arc::new(self)
    }
}

impl fmt::Debug for Intercepting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intercepting")
            .field("scheme", &self.scheme)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Backend for Intercepting {
    fn scheme(&self) -> &'static str {
        self.scheme
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        if let Some(gate) = &self.before_producer {
            gate(stream)?;
        }
        let producer = self.inner.producer(stream).await?;
        Ok(match &self.wrap_producer {
            Some(wrap) => wrap(producer),
            None => producer,
        })
    }
    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        if let Some(gate) = &self.before_consumer {
            gate(stream)?;
        }
        let consumer = self.inner.consumer(stream, options).await?;
        Ok(match &self.wrap_consumer {
            Some(wrap) => wrap(consumer),
            None => consumer,
        })
    }
    async fn create_stream(&self, stream: &str, spec: StreamSpec) -> Result<()> {
        self.inner.create_stream(stream, spec).await
    }
    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.inner.delete_stream(stream).await
    }
    async fn list_streams(&self) -> Result<Vec<String>> {
        self.inner.list_streams().await
    }
    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.inner.describe_stream(stream).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
