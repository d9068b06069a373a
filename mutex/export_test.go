package mutex

// QueuedInClient reports how many Mutex values of c wait for key inside c.
func QueuedInClient(c *Client, key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queued[key])
}
