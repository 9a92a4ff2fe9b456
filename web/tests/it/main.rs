//! The web service end to end: real HTTPS (the installation's own
//! certificate), the real control plane on a real bus.

mod enroll;
