"""The client-contract suite: real client programs against a real server, one matrix row each."""
