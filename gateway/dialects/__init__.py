"""The protocols local apps speak to the gateway. Each dialect has a pure part (parse a client
message into a request, build replies) and a session that applies requests to the hub."""
