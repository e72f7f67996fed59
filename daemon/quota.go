package daemon

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/mp-hsm/mp-hsm/grant"
)

// quotas bound what one caller may put in the token cache: at most
// MaxKeysPerCaller keys, and at most MaxResourcesPerCaller distinct
// resource values among them, so that no caller can fill the cache
// (MaxKeys) for the others. A key counts for each caller that added it (in
// practice the first; callers racing for a new key all count it) for as
// long as its entry is in the cache. Only requests for keys not in the
// cache come here: answering from the cache costs nothing.
type quotas struct {
	mu      sync.Mutex
	callers map[callerID]*holding
	swept   time.Time // when every caller's holding was last pruned
}

// holding is what one caller has in the cache.
type holding struct {
	keys      map[string]heldKey // by cache key
	resources map[string]int     // resource -> how many of keys hold it
}

type heldKey struct {
	e         *grant.Entry
	resources []string
}

// quotaSweepInterval is how often the holdings of every caller are pruned
// of entries the cache dropped, so that callers who left are forgotten.
const quotaSweepInterval = time.Minute

// addKey adds key, for f, to the cache on behalf of who, within who's
// bounds: a request that would take who over MaxResourcesPerCaller gets
// 400 invalid_target (RFC 8707), one over MaxKeysPerCaller 503
// temporarily_unavailable; nothing is signed for either.
func (s *Server) addKey(who callerID, key string, f *request, st *settings) (*grant.Entry, error) {
	q := &s.quotas
	maxKeys, maxRes := st.cfg.MaxKeysPerCaller, st.maxRes
	q.mu.Lock()
	defer q.mu.Unlock()
	if now := s.now(); now.Sub(q.swept) >= quotaSweepInterval {
		q.swept = now
		for id, h := range q.callers {
			if h.prune(s.cache); len(h.keys) == 0 {
				delete(q.callers, id)
			}
		}
	}
	h := q.callers[who]
	if h == nil {
		h = &holding{keys: map[string]heldKey{}, resources: map[string]int{}}
		if q.callers == nil {
			q.callers = map[callerID]*holding{}
		}
		q.callers[who] = h
	}
	h.drop(key) // the cache missed it: the entry it was held for is gone
	res := f.req.Resources
	if h.over(maxKeys, maxRes, res) {
		h.prune(s.cache)
	}
	if maxRes > 0 {
		if n := len(h.resources) + h.newResources(res); n > maxRes {
			return nil, badRequest(errInvalidTarget, fmt.Sprintf(
				"%s already has tokens for %d distinct resources, the most one caller may have (--max-resources-per-caller %d); "+
					"ask for fewer distinct resources, or ask the daemon's operator to allow them (--allowed-resources)",
				who, len(h.resources), maxRes))
		}
	}
	if maxKeys > 0 && len(h.keys) >= maxKeys {
		return nil, &oauthError{status: http.StatusServiceUnavailable, code: errTemporarilyUnavailable, retryAfter: 30,
			description: fmt.Sprintf("%s has %d distinct requests cached, the most one caller may have (--max-keys-per-caller); "+
				"a request nobody asks for is dropped after two token lifetimes", who, len(h.keys))}
	}
	e, err := s.cache.Add(key, f)
	if err != nil {
		return nil, err
	}
	h.keys[key] = heldKey{e: e, resources: res}
	for _, r := range res {
		h.resources[r]++
	}
	return e, nil
}

// over reports whether adding a key with res would pass a bound.
func (h *holding) over(maxKeys, maxRes int, res []string) bool {
	return maxKeys > 0 && len(h.keys) >= maxKeys || maxRes > 0 && len(h.resources)+h.newResources(res) > maxRes
}

// newResources counts the values of res that h does not hold (res is
// deduplicated).
func (h *holding) newResources(res []string) int {
	n := 0
	for _, r := range res {
		if h.resources[r] == 0 {
			n++
		}
	}
	return n
}

// prune forgets the keys whose entries are no longer in c.
func (h *holding) prune(c *grant.Cache) {
	for k, hk := range h.keys {
		if c.Lookup([]byte(k)) != hk.e {
			h.drop(k)
		}
	}
}

// drop forgets key.
func (h *holding) drop(key string) {
	hk, ok := h.keys[key]
	if !ok {
		return
	}
	delete(h.keys, key)
	for _, r := range hk.resources {
		if h.resources[r]--; h.resources[r] <= 0 {
			delete(h.resources, r)
		}
	}
}
