module github.com/mutexkit/mutexkit

go 1.26
