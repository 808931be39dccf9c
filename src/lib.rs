//! Support code for the end-to-end tests in tests/.
