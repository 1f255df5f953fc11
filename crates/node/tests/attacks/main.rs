//! Attacks on the network from outside, through public endpoints only: each test fails on a network without the defense it guards.

mod roles;
