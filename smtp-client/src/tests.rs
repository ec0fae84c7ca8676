//! Dialogue tests against the scripted server.
