//! Agent end-to-end tests: the real agent driven through the real control
//! plane over the bus, running real restic against `rclone serve restic`.

mod alerting;
mod backup;
mod bus_ca;
mod durability;
mod enroll;
mod executor;
mod large;
mod live;
mod maintenance;
mod ops;
mod outbox;
mod ping;
mod repos;
mod schedule;
mod session;
mod support;
