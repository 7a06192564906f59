package redistest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// StartCluster starts a Redis Cluster of n masters (no replicas), each a
// Server like Start's, and returns them with the cluster's
// redis+cluster:// URL. It returns once every node reports
// cluster_state:ok.
func StartCluster(tb testing.TB, n int) ([]*Server, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	nodes := make([]*Server, n)
	clients := make([]*redis.Client, n)
	addrs := make([]string, n)
	for i := range nodes {
		nodes[i] = Start(tb, WithArgs("--cluster-enabled", "yes", "--cluster-node-timeout", "2000"))
		addrs[i] = nodes[i].Addr()
		clients[i] = redis.NewClient(&redis.Options{Addr: addrs[i]})
		defer clients[i].Close()
	}
	for i, c := range clients {
		first, last := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := c.ClusterAddSlotsRange(ctx, first, last).Err(); err != nil {
			tb.Fatalf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", first, last, addrs[i], err)
		}
		if i > 0 {
			host, port, _ := strings.Cut(addrs[i], ":")
			if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
				tb.Fatalf("redistest: CLUSTER MEET %s: %v", addrs[i], err)
			}
		}
	}
	for i, c := range clients {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)+"\r\n") {
				break
			}
			if ctx.Err() != nil {
				tb.Fatalf("redistest: cluster node %s not ready within %v: %v\n%s", addrs[i], readyTimeout, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, "redis+cluster://" + strings.Join(addrs, ",")
}
