//! The integration test binary: the real binary, the real client and the real simulator on
//! loopback, real Cedar over the shipped and fixture policies, real files.

mod audit;
mod audit_daemon;
mod cases;
mod cli;
mod client;
mod daemon;
mod engine;
mod facts;
mod fresh;
mod hostile;
mod keyless;
mod listener;
mod logging;
mod policy;
mod rig;
mod signals;
mod sim;
mod sim_keyless;
mod slicing;
mod support;
mod tls;
