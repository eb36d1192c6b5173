package cluster

// watch registers a waiter for fill messages of key; stop unregisters.
func (c *Cluster) watch(key string) (ch chan string, stop func()) {
	ch = make(chan string, 4)
	c.wmu.Lock()
	set := c.waiters[key]
	if set == nil {
		set = map[chan string]struct{}{}
		c.waiters[key] = set
	}
	set[ch] = struct{}{}
	c.wmu.Unlock()
	return ch, func() {
		c.wmu.Lock()
		delete(set, ch)
		if len(set) == 0 && c.waiters[key] != nil && len(c.waiters[key]) == 0 {
			delete(c.waiters, key)
		}
		c.wmu.Unlock()
	}
}

func (c *Cluster) notify(key, msg string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for ch := range c.waiters[key] {
		select {
		case ch <- msg:
		default:
		}
	}
}

// wakeAll makes every waiter re-check its claim (after a reconnect).
func (c *Cluster) wakeAll() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, set := range c.waiters {
		for ch := range set {
			select {
			case ch <- "":
			default:
			}
		}
	}
}
