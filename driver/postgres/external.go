package postgres

import (
	"database/sql"
	"net"

	"github.com/mutexkit/mutexkit/driver"
	"github.com/mutexkit/mutexkit/driver/postgres/internal/backend"
)

// Pools another module supplies (driver/postgres/pgxv5): its connections
// and errors, this package's Locker.
func init() {
	backend.NewConnector = func(p backend.Pool, opts any) driver.Connector {
		cfg := defaultConfig()
		o, _ := opts.([]Option)
		cfg.apply(o)
		return &connector{cfg: cfg, external: &p}
	}
}

// connectExternal makes the Locker of a module's pool: its *sql.DB is the
// Locker's own (closed by Close; its connections, destroyed when closed,
// never go back to the pool), but the connections are the application's,
// so waiting for one is bounded as for FromDB.
func (c *connector) connectExternal() (*locker, error) {
	db, err := c.external.Open()
	if err != nil {
		return nil, err
	}
	// Sessions are taken for good and discarded, never pooled.
	db.SetMaxIdleConns(0)
	return newLocker(c.cfg, db, true, nil, dsnInfo{password: c.external.Secret}), nil
}

// socketOf returns the network connection under c, when its driver
// connection gives it (backend.Socket), or nil.
func socketOf(c *sql.Conn) net.Conn {
	var nc net.Conn
	c.Raw(func(dc any) error {
		if s, ok := dc.(backend.Socket); ok {
			nc = s.NetConn()
		}
		return nil
	})
	return nc
}
