module github.com/mutexkit/mutexkit/driver/mysql

go 1.26.0

require (
	github.com/go-sql-driver/mysql v1.10.1
	github.com/mutexkit/mutexkit v0.0.0
)

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/anishathalye/porcupine v1.3.1 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/mutexkit/mutexkit => ../..
