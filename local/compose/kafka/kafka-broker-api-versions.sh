#!/bin/bash
# The health check compose.yaml runs (`... --bootstrap-server HOST:PORT`): here, that the broker's
# port takes a connection.
address=${2:-localhost:9092}
exec 3<>"/dev/tcp/${address%:*}/${address##*:}"
