package testnet

import (
	"net"
	"time"
)

// Trickle is a slowloris client: it writes data to c one byte a second,
// starting over at its end, until stop is closed or a write fails, and
// then closes c.
func Trickle(c net.Conn, data []byte, stop <-chan struct{}) {
	defer c.Close()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
			if _, err := c.Write(data[i%len(data) : i%len(data)+1]); err != nil {
				return
			}
		}
	}
}
