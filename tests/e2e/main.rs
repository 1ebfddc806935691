//! End-to-end tests: real HTTP vendors on loopback, the real gRPC stack, a
//! real SQLite file, and the real `raccordo` binary where a process matters.

mod amqp;
mod delivery;
mod practice_api;
mod process;
mod support;
mod validation;
