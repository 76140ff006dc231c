//! WAL tests on the simulator.
