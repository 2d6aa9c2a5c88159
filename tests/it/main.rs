//! Integration tests against real daemons (started by scripts/test.sh).
