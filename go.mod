module github.com/mutexkit/mutexkit

go 1.26

require (
	github.com/gomodule/redigo v1.9.3 // indirect
	github.com/jmoiron/sqlx v1.4.0 // indirect
	github.com/lib/pq v1.12.3 // indirect
)
