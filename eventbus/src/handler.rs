//! Handlers: async functions that receive events.
//!
//! `#[handler]` registers a function at compile time; [`HandlerDef`] is the
//! same thing built by hand for [`BusBuilder::handler`](crate::BusBuilder::handler).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;

use bytes::Bytes;

use crate::Envelope;
use crate::codec::DecodeError;
use crate::context::{Context, ContextSeed};
use crate::event::Upcast;
use crate::trace::TraceContext;
pub use eventbus_core::arg::{HandlerArg, Incoming};

/// Options of a handler, from `#[handler(...)]` or the [`HandlerDef`] builder.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandlerMeta {
    /// The function name.
    pub name: &'static str,
    /// `module_path!()` where the handler is defined.
    pub module_path: &'static str,
    /// The consumer group; `<service>.<name>` when `None`.
    pub group: Option<&'static str>,
    /// Retries after the first attempt before the event is dead-lettered.
    pub retries: Option<u32>,
    /// Events handled at once by one instance of this handler.
    pub concurrency: Option<u32>,
    /// A global handler (`#[handler(all)]`) receives every event on the bus.
    pub all: bool,
    /// Every running instance handles each event (`#[handler(broadcast)]`),
    /// instead of the group's instances competing for it.
    pub broadcast: bool,
}

impl HandlerMeta {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        module_path: &'static str,
        group: Option<&'static str>,
        retries: Option<u32>,
        concurrency: Option<u32>,
        all: bool,
        broadcast: bool,
    ) -> Self {
        Self {
            name,
            module_path,
            group,
            retries,
            concurrency,
            all,
            broadcast,
        }
    }
}

/// Why a handler run did not succeed.
#[doc(hidden)]
#[derive(Debug)]
pub enum Failure {
    /// The handler returned an error or panicked; worth a retry.
    Error(String),
}

#[doc(hidden)]
pub type HandlerFuture = BoxFuture<'static, Result<(), Failure>>;

/// A type-erased handler.
#[doc(hidden)]
pub trait ErasedHandler: Send + Sync + 'static {
    /// A place for one run of the handler at a time, reused run after run
    /// (a worker keeps one per unit of concurrency).
    fn slot(self: Arc<Self>) -> Box<dyn HandlerSlot>;
    /// The CloudEvents type it takes; `None` for a global handler.
    fn event_type(&self) -> Option<&'static str>;
}

/// The trace context a run continues, chosen from its envelope (the worker
/// opens the run's span there).
#[doc(hidden)]
pub type Scope<'a> = &'a mut dyn FnMut(&Envelope) -> Option<TraceContext>;

/// One run of a handler at a time. A typed handler's slot holds the run's
/// future inline, so starting a run allocates nothing: the future is
/// written into the slot and dropped there when it ends.
#[doc(hidden)]
pub trait HandlerSlot: Send {
    /// Decodes the message (in one pass), builds its [`Envelope`] and starts
    /// the handler in this idle slot, in the trace context `scope` chooses;
    /// the envelope is also returned for the worker (tracing, dead letters).
    fn start(&mut self, call: Call<'_>, scope: Scope<'_>) -> Result<Envelope, DecodeError>;
    /// Polls the run; once it is ready the slot is idle again.
    fn poll_run(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Failure>>;
    /// Drops the run (timed out, or not to be run at all).
    fn clear(&mut self);
}

/// A run as a typed slot holds it: the handler's own future, panics caught,
/// in the event's trace context.
type Run<Fut> = tokio::task::futures::TaskLocalFuture<
    Option<TraceContext>,
    futures::future::CatchUnwind<AssertUnwindSafe<Fut>>,
>;

/// The slot of a typed handler.
struct InlineSlot<H, Fut> {
    handler: Arc<H>,
    run: Pin<Box<Option<Run<Fut>>>>,
}

impl<H, Fut, R> InlineSlot<H, Fut>
where
    Fut: Future<Output = R> + Send + 'static,
    R: HandlerReturn,
{
    fn new(handler: Arc<H>) -> Box<Self> {
        Box::new(Self {
            handler,
            run: Box::pin(None),
        })
    }

    fn begin(&mut self, fut: Fut, handling: Option<TraceContext>) {
        self.run.set(Some(crate::trace::scoped(
            handling,
            AssertUnwindSafe(fut).catch_unwind(),
        )));
    }

    fn poll_inline(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Failure>> {
        let Some(run) = self.run.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Failure::Error("no handler run in this slot".into())));
        };
        let out = std::task::ready!(run.poll(cx));
        self.run.set(None);
        Poll::Ready(match out {
            Ok(ret) => ret.into_outcome().map_err(Failure::Error),
            Err(panic) => Err(Failure::Error(format!(
                "handler panicked: {}",
                panic_message(&*panic)
            ))),
        })
    }
}

/// One delivery, as the worker hands it to a handler.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct Call<'a> {
    /// The message, as received.
    pub payload: &'a Bytes,
    /// Old types whose `replaced_by` is this handler's type, with their conversion.
    pub upcasts: &'a [(&'static str, Upcast)],
    /// Everything but the envelope for the handler's `Context`.
    pub context: ContextSeed,
}

impl Call<'_> {
    fn decode<A: HandlerArg>(&self) -> Result<(Envelope, A), DecodeError> {
        let incoming = Incoming {
            payload: self.payload,
            upcasts: self.upcasts,
        };
        let (attrs, arg) = A::decode(&incoming)?;
        let envelope = Envelope::new(Bytes::clone(self.payload), &attrs);
        let envelope = match A::event_type() {
            Some(ty) => envelope.with_known_type(ty),
            None => envelope,
        };
        Ok((envelope, arg))
    }
}

/// A handler ready to be given to the bus.
///
/// `#[handler]` builds one for each annotated function and registers it;
/// build one by hand for [`BusBuilder::handler`](crate::BusBuilder::handler):
///
/// ```
/// # use eventbus::{Context, Event, HandlerDef};
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
/// # #[event("ping")]
/// # struct Ping { n: u32 }
/// async fn on_ping(ping: Ping, _ctx: Context) -> Result<(), std::io::Error> {
///     println!("ping {}", ping.n);
///     Ok(())
/// }
/// let def = HandlerDef::new("on_ping", on_ping).group("pings").retries(3).concurrency(4);
/// assert_eq!(def.meta().group, Some("pings"));
/// ```
pub struct HandlerDef {
    pub(crate) meta: HandlerMeta,
    pub(crate) handler: Arc<dyn ErasedHandler>,
}

impl fmt::Debug for HandlerDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerDef")
            .field("meta", &self.meta)
            .field("event_type", &self.handler.event_type())
            .finish()
    }
}

impl HandlerDef {
    /// A handler named `name` (its default group is `<service>.<name>`).
    pub fn new<F, Args>(name: &'static str, f: F) -> Self
    where
        F: IntoHandler<Args>,
    {
        let meta = HandlerMeta::__new(name, "", None, None, None, F::GLOBAL, false);
        Self {
            meta,
            handler: f.into_erased(),
        }
    }

    #[doc(hidden)]
    pub fn __from_macro<F, Args>(f: F, meta: HandlerMeta) -> Self
    where
        F: IntoHandler<Args>,
    {
        Self {
            meta,
            handler: f.into_erased(),
        }
    }

    /// Sets the consumer group.
    pub fn group(mut self, group: &'static str) -> Self {
        self.meta.group = Some(group);
        self
    }

    /// Sets the number of retries after the first attempt.
    pub fn retries(mut self, retries: u32) -> Self {
        self.meta.retries = Some(retries);
        self
    }

    /// Sets how many events one instance handles at once.
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.meta.concurrency = Some(concurrency);
        self
    }

    /// Every running instance handles each event (a cache to drop, a
    /// connected client to notify), instead of one instance of the group
    /// (`#[handler(broadcast)]`). The bus refuses it at start on a transport
    /// that cannot broadcast (Redis Streams: route the type to pub/sub).
    pub fn broadcast(mut self) -> Self {
        self.meta.broadcast = true;
        self
    }

    /// The handler's options.
    pub fn meta(&self) -> &HandlerMeta {
        &self.meta
    }

    /// The CloudEvents type it handles; `None` for a global handler.
    pub fn event_type(&self) -> Option<&'static str> {
        self.handler.event_type()
    }
}

/// An async function usable as a handler: `async fn(E) -> R` or
/// `async fn(E, Context) -> R`, where `E` is an [`Event`](crate::Event) (or [`CloudEvent`](crate::CloudEvent)
/// for a global handler) and `R` is `()` or `Result<(), impl Display>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an eventbus handler",
    label = "expected `async fn(event: impl Event, ctx: Context) -> Result<(), E>`",
    note = "a handler is an `async fn` whose first argument is an `#[derive(Event)]` type (or `CloudEvent` with `#[handler(all)]`), optionally followed by `Context`, returning `()` or `Result<(), E>`"
)]
pub trait IntoHandler<Args>: Send + Sync + Sized + 'static {
    #[doc(hidden)]
    const GLOBAL: bool;
    #[doc(hidden)]
    fn into_erased(self) -> Arc<dyn ErasedHandler>;
}

/// What a handler may return: `()` or `Result<(), E>` with `E: Display`.
#[diagnostic::on_unimplemented(
    message = "a handler must return `()` or `Result<(), E>` where `E: Display`, not `{Self}`",
    label = "unsupported return type"
)]
pub trait HandlerReturn: Send + 'static {
    #[doc(hidden)]
    fn into_outcome(self) -> Result<(), String>;
}

impl HandlerReturn for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display + Send + 'static> HandlerReturn for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:#}"))
    }
}

/// The second argument of a handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "only `eventbus::Context` may follow the event",
    note = "read app state with `ctx.state::<T>()`"
)]
pub trait ContextArg: Send + 'static {
    #[doc(hidden)]
    fn from_context(ctx: Context) -> Self;
}

impl ContextArg for Context {
    fn from_context(ctx: Context) -> Self {
        ctx
    }
}

struct Erased<F, Args> {
    f: F,
    _args: PhantomData<fn(Args)>,
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

impl<F, Fut, A, R> ErasedHandler for Erased<F, (A,)>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    R: HandlerReturn,
{
    fn slot(self: Arc<Self>) -> Box<dyn HandlerSlot> {
        InlineSlot::<Self, Fut>::new(self)
    }

    fn event_type(&self) -> Option<&'static str> {
        A::event_type()
    }
}

impl<F, Fut, A, R> HandlerSlot for InlineSlot<Erased<F, (A,)>, Fut>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    R: HandlerReturn,
{
    fn start(&mut self, call: Call<'_>, scope: Scope<'_>) -> Result<Envelope, DecodeError> {
        let (envelope, arg) = call.decode::<A>()?;
        let handling = scope(&envelope);
        let fut = (self.handler.f)(arg);
        self.begin(fut, handling);
        Ok(envelope)
    }

    fn poll_run(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Failure>> {
        self.poll_inline(cx)
    }

    fn clear(&mut self) {
        self.run.set(None);
    }
}

impl<F, Fut, A, C, R> ErasedHandler for Erased<F, (A, C)>
where
    F: Fn(A, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    C: ContextArg,
    R: HandlerReturn,
{
    fn slot(self: Arc<Self>) -> Box<dyn HandlerSlot> {
        InlineSlot::<Self, Fut>::new(self)
    }

    fn event_type(&self) -> Option<&'static str> {
        A::event_type()
    }
}

impl<F, Fut, A, C, R> HandlerSlot for InlineSlot<Erased<F, (A, C)>, Fut>
where
    F: Fn(A, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    C: ContextArg,
    R: HandlerReturn,
{
    fn start(&mut self, call: Call<'_>, scope: Scope<'_>) -> Result<Envelope, DecodeError> {
        let (envelope, arg) = call.decode::<A>()?;
        let handling = scope(&envelope);
        let ctx = call.context.into_context(envelope.clone());
        let fut = (self.handler.f)(arg, C::from_context(ctx));
        self.begin(fut, handling);
        Ok(envelope)
    }

    fn poll_run(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Failure>> {
        self.poll_inline(cx)
    }

    fn clear(&mut self) {
        self.run.set(None);
    }
}

impl<F, Fut, A, R> IntoHandler<(A,)> for F
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    R: HandlerReturn,
{
    const GLOBAL: bool = A::GLOBAL;

    fn into_erased(self) -> Arc<dyn ErasedHandler> {
        Arc::new(Erased::<F, (A,)> {
            f: self,
            _args: PhantomData,
        })
    }
}

impl<F, Fut, A, C, R> IntoHandler<(A, C)> for F
where
    F: Fn(A, C) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: HandlerArg,
    C: ContextArg,
    R: HandlerReturn,
{
    const GLOBAL: bool = A::GLOBAL;

    fn into_erased(self) -> Arc<dyn ErasedHandler> {
        Arc::new(Erased::<F, (A, C)> {
            f: self,
            _args: PhantomData,
        })
    }
}

/// Compile-time checks emitted by `#[handler]` under each argument.
#[doc(hidden)]
pub mod check {
    use super::{ContextArg, HandlerArg, HandlerReturn};

    /// The first argument of `#[handler]` must be an event.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not an event type",
        label = "not an event",
        note = "derive `eventbus::Event` for `{Self}` with `#[event(\"type_name\")]`, or write `#[handler(all)]` and take `eventbus::CloudEvent`"
    )]
    pub trait TypedEventArg {}
    impl<E: crate::Event> TypedEventArg for E {}

    /// The argument of `#[handler(all)]` must be `CloudEvent`.
    #[diagnostic::on_unimplemented(
        message = "a global handler takes `eventbus::CloudEvent`, not `{Self}`",
        label = "expected `eventbus::CloudEvent`",
        note = "`#[handler(all)]` receives every event on the bus, of any type; drop `all` to handle one typed event"
    )]
    pub trait GlobalEventArg {}
    impl GlobalEventArg for crate::CloudEvent {}

    /// An event's data has a JSON Schema (the catalogue shows it).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` does not derive `schemars::JsonSchema`, which every event needs",
        label = "add `schemars::JsonSchema` to the `#[derive(...)]` of `{Self}`",
        note = "the catalogue documents each event's data with its JSON Schema; derive `schemars::JsonSchema` for `{Self}` and for the types of its fields (or implement it by hand)"
    )]
    pub trait DerivesJsonSchema {}
    impl<T: schemars::JsonSchema> DerivesJsonSchema for T {}

    pub fn json_schema<T: DerivesJsonSchema>() {}
    pub fn event_arg<T: TypedEventArg + HandlerArg>() {}
    pub fn global_arg<T: GlobalEventArg + HandlerArg>() {}
    pub fn context_arg<T: ContextArg>() {}
    pub fn return_type<T: HandlerReturn>() {}
}
