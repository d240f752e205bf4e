"""The roster sync: what an applied Clever event does across the roster, the single-school rule
and the downstream messages. It sits above `service/roster` and `service/programs` (it calls
both), below the consumer process that runs it."""
