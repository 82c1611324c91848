//! Chat: conversations rendered through chat templates, kept in a [`loupe_engine::session`]
//! across turns, and the two ways to drive one: the interactive REPL (a terminal) and
//! the piped mode (anything else).

pub mod commands;
pub mod conversation;
pub mod piped;
pub mod repl;
pub mod saved;
pub mod template;
pub mod ui;
pub mod zoom;

pub use conversation::{Conversation, Event, TokenRecord, TurnStats};
pub use template::{ChatTemplate, Message};
