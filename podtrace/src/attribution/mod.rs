//! Who a process belongs to, from its cgroup path and from runtime helpers' argv (owned by the attribution work).
