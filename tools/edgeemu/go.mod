module github.com/rtsptunnel/rtsptunnel/tools/edgeemu

go 1.26.0

require (
	github.com/amenzhinsky/iothub v0.9.1
	github.com/coder/websocket v1.8.15
	github.com/eclipse/paho.mqtt.golang v1.3.5
	github.com/mochi-mqtt/server/v2 v2.7.9
)

require (
	github.com/Azure/go-amqp v0.18.1 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/rs/xid v1.4.0 // indirect
	golang.org/x/net v0.62.0 // indirect
)
