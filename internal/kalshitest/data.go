package kalshitest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"
)

// samples holds the Kalshi sample bodies the fake universe is built from.
// They are copies of the reference samples, shaped after the live API
// (post 2026-03-12 field set: *_dollars and *_fp strings only).
//
//go:embed testdata/markets_page.json testdata/series.json testdata/event_without_nested_markets.json testdata/error_404.json testdata/error_429.json
var samples embed.FS

// eventSuffix is the date part of every event ticker in the universe:
// series S has the single event S + "-" + eventSuffix.
const eventSuffix = "26JUN30"

// market mirrors a Kalshi Market object. Field order follows the samples so
// that the marshalled form is byte-for-byte shaped like a real response.
type market struct {
	Ticker                   string            `json:"ticker"`
	EventTicker              string            `json:"event_ticker"`
	MarketType               string            `json:"market_type"`
	Title                    string            `json:"title"`
	Subtitle                 string            `json:"subtitle"`
	YesSubTitle              string            `json:"yes_sub_title"`
	NoSubTitle               string            `json:"no_sub_title"`
	CreatedTime              string            `json:"created_time"`
	UpdatedTime              string            `json:"updated_time"`
	OpenTime                 string            `json:"open_time"`
	CloseTime                string            `json:"close_time"`
	ExpectedExpirationTime   string            `json:"expected_expiration_time"`
	ExpirationTime           string            `json:"expiration_time"`
	LatestExpirationTime     string            `json:"latest_expiration_time"`
	SettlementTimerSeconds   int               `json:"settlement_timer_seconds"`
	Status                   string            `json:"status"`
	YesBidDollars            string            `json:"yes_bid_dollars"`
	YesBidSizeFP             string            `json:"yes_bid_size_fp"`
	YesAskDollars            string            `json:"yes_ask_dollars"`
	YesAskSizeFP             string            `json:"yes_ask_size_fp"`
	NoBidDollars             string            `json:"no_bid_dollars"`
	NoAskDollars             string            `json:"no_ask_dollars"`
	LastPriceDollars         string            `json:"last_price_dollars"`
	VolumeFP                 string            `json:"volume_fp"`
	Volume24hFP              string            `json:"volume_24h_fp"`
	Result                   string            `json:"result"`
	CanCloseEarly            bool              `json:"can_close_early"`
	FractionalTradingEnabled bool              `json:"fractional_trading_enabled"`
	OpenInterestFP           string            `json:"open_interest_fp"`
	NotionalValueDollars     string            `json:"notional_value_dollars"`
	PreviousYesBidDollars    string            `json:"previous_yes_bid_dollars"`
	PreviousYesAskDollars    string            `json:"previous_yes_ask_dollars"`
	PreviousPriceDollars     string            `json:"previous_price_dollars"`
	LiquidityDollars         string            `json:"liquidity_dollars"`
	SettlementValueDollars   string            `json:"settlement_value_dollars"`
	SettlementTS             string            `json:"settlement_ts,omitempty"` // set once a market is determined
	ExpirationValue          string            `json:"expiration_value"`
	EarlyCloseCondition      string            `json:"early_close_condition"`
	StrikeType               string            `json:"strike_type"`
	CustomStrike             map[string]string `json:"custom_strike"`
	RulesPrimary             string            `json:"rules_primary"`
	RulesSecondary           string            `json:"rules_secondary"`
	PriceLevelStructure      string            `json:"price_level_structure"`
	PriceRanges              []priceRange      `json:"price_ranges"`
	IsProvisional            bool              `json:"is_provisional"`
	ExchangeIndex            int               `json:"exchange_index"`
}

type priceRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
	Step  string `json:"step"`
}

type source struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// event mirrors a Kalshi EventData object. Markets is the pre-marshalled
// nested market list; it is nil (and omitted) in the non-nested form.
type event struct {
	EventTicker          string          `json:"event_ticker"`
	SeriesTicker         string          `json:"series_ticker"`
	SubTitle             string          `json:"sub_title"`
	Title                string          `json:"title"`
	CollateralReturnType string          `json:"collateral_return_type"`
	MutuallyExclusive    bool            `json:"mutually_exclusive"`
	Category             string          `json:"category"`
	StrikePeriod         string          `json:"strike_period"`
	Markets              json.RawMessage `json:"markets,omitempty"`
	ProductMetadata      json.RawMessage `json:"product_metadata"`
	SettlementSources    []source        `json:"settlement_sources"`
	LastUpdatedTS        string          `json:"last_updated_ts"`
	ExchangeIndex        int             `json:"exchange_index"`
}

// series mirrors a Kalshi Series object.
type series struct {
	Ticker                 string          `json:"ticker"`
	Frequency              string          `json:"frequency"`
	Title                  string          `json:"title"`
	Category               string          `json:"category"`
	Categories             []string        `json:"categories"`
	Tags                   []string        `json:"tags"`
	SettlementSources      []source        `json:"settlement_sources"`
	ContractURL            string          `json:"contract_url"`
	ContractTermsURL       string          `json:"contract_terms_url"`
	ProductMetadata        json.RawMessage `json:"product_metadata"`
	FeeType                string          `json:"fee_type"`
	FeeMultiplier          float64         `json:"fee_multiplier"`
	AdditionalProhibitions []string        `json:"additional_prohibitions"`
	VolumeFP               string          `json:"volume_fp"`
	LastUpdatedTS          string          `json:"last_updated_ts"`
	ExchangeIndex          int             `json:"exchange_index"`
}

// orderbook mirrors GET /markets/{ticker}/orderbook: price levels are
// [price_dollars, count_fp] pairs, ascending, best bid last.
type orderbook struct {
	OrderbookFP bookSides `json:"orderbook_fp"`
}

type bookSides struct {
	YesDollars [][2]string `json:"yes_dollars"`
	NoDollars  [][2]string `json:"no_dollars"`
}

// templates holds the decoded samples. It is built once per Server and never
// modified afterwards.
type templates struct {
	market        market            // first market of markets_page.json
	sampleMarkets map[string]market // every sample market, by ticker, reused verbatim
	event         event             // event of event_without_nested_markets.json
	series        series            // series of series.json
	notFound      []byte            // error_404.json, verbatim
	tooMany       []byte            // error_429.json, verbatim
}

func loadTemplates() *templates {
	var page struct {
		Markets []market `json:"markets"`
		Cursor  string   `json:"cursor"`
	}
	var ev struct {
		Event   event    `json:"event"`
		Markets []market `json:"markets"`
	}
	var se struct {
		Series series `json:"series"`
	}
	mustDecode("testdata/markets_page.json", &page)
	mustDecode("testdata/event_without_nested_markets.json", &ev)
	mustDecode("testdata/series.json", &se)
	t := &templates{
		market:        page.Markets[0],
		sampleMarkets: make(map[string]market, len(page.Markets)),
		event:         ev.Event,
		series:        se.Series,
		notFound:      mustRead("testdata/error_404.json"),
		tooMany:       mustRead("testdata/error_429.json"),
	}
	for _, m := range page.Markets {
		t.sampleMarkets[m.Ticker] = m
	}
	return t
}

func mustRead(name string) []byte {
	b, err := samples.ReadFile(name)
	if err != nil {
		panic("kalshitest: " + err.Error())
	}
	return b
}

// mustDecode strictly decodes an embedded sample; an unknown field means the
// Go model no longer matches the sample shape, which is a bug in this package.
func mustDecode(name string, v any) {
	dec := json.NewDecoder(bytes.NewReader(mustRead(name)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		panic(fmt.Sprintf("kalshitest: decoding %s: %v", name, err))
	}
}

// outcome is one market of an event: the ticker suffix and the label shown
// in yes_sub_title / no_sub_title / custom_strike.
type outcome struct{ code, label string }

// seriesSpec describes one series of the universe; it expands to a series,
// one event and one market per outcome.
type seriesSpec struct {
	ticker      string
	eventTicker string

	title, frequency, category string
	categories, tags           []string
	sources                    []source
	contractURL, termsURL      string

	eventTitle, eventSubTitle string
	mutuallyExclusive         bool

	marketTitle    string
	outcomes       []outcome
	rulesPrimary   func(label string) string
	rulesSecondary string // "" keeps the template's
	closeTime      string // "" keeps the template's times
	expectedExpiry string
	expiration     string
	openTime       string // "" keeps the template's open and created times

	// finish, if set, adjusts market i of the event after the generic
	// fields are filled (status, result and settlement of settled markets).
	finish func(i int, m *market)
}

type company struct {
	sym, short, long string
	ir               source
	words            []outcome
}

// earningsCompanies returns the KXEARNINGSMENTION<sym> series, in universe
// order. META's first three words are the tickers of the samples, which are
// served verbatim.
func earningsCompanies() []company {
	return []company{
		{"META", "Meta", "Meta Platforms, Inc.", source{"Meta Platforms Investor Relations", "https://investor.atmeta.com/"}, []outcome{
			{"VR", "VR / Virtual Reality"}, {"LLAM", "Llama"}, {"THRE", "Threads"}, {"SUPE", "Superintelligence"},
			{"GLAS", "Glasses"}, {"WHAT", "WhatsApp"}, {"INST", "Instagram"}, {"CAPX", "Capex"},
			{"AGEN", "Agent / Agentic"}, {"TARI", "Tariff"}, {"CHIN", "China"}, {"REGU", "Regulation"},
		}},
		{"TSLA", "Tesla", "Tesla, Inc.", source{"Tesla Investor Relations", "https://ir.tesla.com/"}, []outcome{
			{"ROBO", "Robotaxi"}, {"OPTI", "Optimus"}, {"FSD", "FSD / Full Self-Driving"}, {"CYBE", "Cybertruck"},
			{"MEGA", "Megapack"}, {"DOJO", "Dojo"}, {"XAI", "xAI"}, {"TARI", "Tariff"},
			{"CHIN", "China"}, {"AI", "AI / Artificial Intelligence"}, {"REGU", "Regulation"}, {"RECE", "Recession"},
		}},
		{"NVDA", "Nvidia", "NVIDIA Corporation", source{"NVIDIA Investor Relations", "https://investor.nvidia.com/"}, []outcome{
			{"BLAC", "Blackwell"}, {"RUBI", "Rubin"}, {"CUDA", "CUDA"}, {"SOVE", "Sovereign AI"},
			{"HOPP", "Hopper"}, {"OPEN", "OpenAI"}, {"INFE", "Inference"}, {"ROBO", "Robotics"},
			{"TARI", "Tariff"}, {"CHIN", "China"}, {"EXPO", "Export Control"}, {"AGEN", "Agent / Agentic"},
		}},
		{"AAPL", "Apple", "Apple Inc.", source{"Apple Investor Relations", "https://investor.apple.com/"}, []outcome{
			{"IPHO", "iPhone"}, {"VISI", "Vision Pro"}, {"SIRI", "Siri"}, {"INTE", "Apple Intelligence"},
			{"TARI", "Tariff"}, {"CHIN", "China"}, {"INDI", "India"}, {"SERV", "Services"},
			{"WATC", "Watch"}, {"OPEN", "OpenAI"}, {"GEMI", "Gemini"}, {"REGU", "Regulation"},
		}},
		{"MSFT", "Microsoft", "Microsoft Corporation", source{"Microsoft Investor Relations", "https://www.microsoft.com/en-us/investor"}, []outcome{
			{"AZUR", "Azure"}, {"COPI", "Copilot"}, {"OPEN", "OpenAI"}, {"GITH", "GitHub"},
			{"XBOX", "Xbox"}, {"LINK", "LinkedIn"}, {"QUAN", "Quantum"}, {"TARI", "Tariff"},
			{"CAPX", "Capex"}, {"AGEN", "Agent / Agentic"}, {"DATA", "Data Center"}, {"SECU", "Security"},
		}},
		{"AMZN", "Amazon", "Amazon.com, Inc.", source{"Amazon Investor Relations", "https://ir.aboutamazon.com/"}, []outcome{
			{"AWS", "AWS"}, {"ALEX", "Alexa"}, {"PRIM", "Prime"}, {"KUIP", "Kuiper"},
			{"ANTH", "Anthropic"}, {"TRAI", "Trainium"}, {"ROBO", "Robotics"}, {"TARI", "Tariff"},
			{"CHIN", "China"}, {"AGEN", "Agent / Agentic"}, {"GROC", "Grocery"}, {"ADVE", "Advertising"},
		}},
		{"GOOGL", "Google", "Alphabet Inc.", source{"Alphabet Investor Relations", "https://abc.xyz/investor/"}, []outcome{
			{"GEMI", "Gemini"}, {"WAYM", "Waymo"}, {"YOUT", "YouTube"}, {"CLOU", "Google Cloud"},
			{"TPU", "TPU"}, {"SEAR", "Search"}, {"ANTI", "Antitrust"}, {"QUAN", "Quantum"},
			{"TARI", "Tariff"}, {"AGEN", "Agent / Agentic"}, {"CAPX", "Capex"}, {"PIXE", "Pixel"},
		}},
		{"NFLX", "Netflix", "Netflix, Inc.", source{"Netflix Investor Relations", "https://ir.netflix.net/"}, []outcome{
			{"ADS", "Ads / Advertising"}, {"LIVE", "Live"}, {"SPOR", "Sports"}, {"GAME", "Gaming"},
			{"PASS", "Password Sharing"}, {"WWE", "WWE"}, {"SQUI", "Squid Game"}, {"STRA", "Stranger Things"},
			{"AI", "AI / Artificial Intelligence"}, {"TARI", "Tariff"}, {"PRIC", "Price Increase"}, {"CHUR", "Churn"},
		}},
	}
}

// defaultSpecs returns the series of the default universe, in list order.
func (t *templates) defaultSpecs() []seriesSpec {
	companies := earningsCompanies()
	specs := make([]seriesSpec, 0, len(companies)+2)
	for _, c := range companies {
		specs = append(specs, t.earningsSpec(c))
	}
	specs = append(specs, fedSpec(), syntheticSpec("KXBIGSERIES", 450))
	return append(specs, cpiSpecs()...)
}

func (t *templates) earningsSpec(c company) seriesSpec {
	ticker := "KXEARNINGSMENTION" + c.sym
	title := "What will " + c.long + " say during their next earnings call?"
	return seriesSpec{
		ticker:        ticker,
		eventTicker:   ticker + "-" + eventSuffix,
		title:         "What will " + c.short + " say during their earnings call?",
		frequency:     t.series.Frequency,
		category:      t.series.Category,
		categories:    t.series.Categories,
		tags:          []string{"Earnings", c.short},
		sources:       []source{c.ir},
		contractURL:   t.series.ContractURL,
		termsURL:      t.series.ContractTermsURL,
		eventTitle:    title,
		eventSubTitle: t.event.SubTitle,
		marketTitle:   title,
		outcomes:      c.words,
		rulesPrimary: func(label string) string {
			return "If " + label + " is said by any " + c.long +
				" representative (including the operator) during the next earnings call (including the Q&A), then the market resolves to Yes."
		},
	}
}

func fedSpec() seriesSpec {
	const ticker = "KXFEDDECISION"
	return seriesSpec{
		ticker:            ticker,
		eventTicker:       ticker + "-" + eventSuffix,
		title:             "Fed decision",
		frequency:         "custom",
		category:          "Economics",
		categories:        []string{"Economics", "Financials"},
		tags:              []string{"Fed", "Interest Rates"},
		sources:           []source{{"Federal Reserve", "https://www.federalreserve.gov/"}},
		contractURL:       "https://kalshi-public-docs.s3.amazonaws.com/regulatory/product-certifications/FED.pdf",
		termsURL:          "https://kalshi-public-docs.s3.amazonaws.com/contract_terms/FEDDECISION.pdf",
		eventTitle:        "Fed decision in Jun 2026?",
		eventSubTitle:     "Jun 17, 2026",
		mutuallyExclusive: true,
		marketTitle:       "Fed decision in Jun 2026?",
		outcomes: []outcome{
			{"H26", "Hike >25bps"}, {"H25", "Hike 25bps"}, {"H0", "Hold"}, {"C25", "Cut 25bps"}, {"C26", "Cut >25bps"},
		},
		rulesPrimary: func(label string) string {
			return "If the Federal Reserve's target rate decision announced on Jun 17, 2026 is " + label +
				", then the market resolves to Yes."
		},
		rulesSecondary: "The outcome is determined by the FOMC statement released after the meeting.",
		closeTime:      "2026-06-17T17:55:00Z",
		expectedExpiry: "2026-06-17T18:00:00Z",
		expiration:     "2026-06-24T14:00:00Z",
	}
}

// syntheticSpec describes a generated series with n markets named
// <SERIES>-26JUN30-M001, -M002, ... (zero-padded to at least three digits).
func syntheticSpec(ticker string, n int) seriesSpec {
	width := max(3, len(strconv.Itoa(n)))
	outcomes := make([]outcome, n)
	for i := range outcomes {
		outcomes[i] = outcome{fmt.Sprintf("M%0*d", width, i+1), fmt.Sprintf("Outcome %d", i+1)}
	}
	eventTicker := ticker + "-" + eventSuffix
	title := "Which outcome for " + eventTicker + "?"
	return seriesSpec{
		ticker:        ticker,
		eventTicker:   eventTicker,
		title:         ticker + " (synthetic test series)",
		frequency:     "custom",
		category:      "Synthetic",
		categories:    []string{"Synthetic"},
		tags:          []string{"Test"},
		sources:       []source{{"kalshitest", "https://example.com/kalshitest"}},
		contractURL:   "https://example.com/kalshitest/contract.pdf",
		termsURL:      "https://example.com/kalshitest/terms.pdf",
		eventTitle:    title,
		eventSubTitle: "Synthetic event",
		marketTitle:   title,
		outcomes:      outcomes,
		rulesPrimary: func(label string) string {
			return "If " + label + " is the outcome of " + eventTicker + ", then the market resolves to Yes."
		},
		rulesSecondary: "Synthetic market served by kalshitest.",
	}
}

// marketData is one market with its pre-marshalled answers.
type marketData struct {
	ticker, event, series string
	status                string
	raw                   []byte // the market object
	body                  []byte // GET /markets/{ticker}
	book                  bookSides
	bookBody              []byte         // GET /markets/{ticker}/orderbook (full depth)
	hist                  *marketHistory // times, trades and candles (history.go)
}

// eventData is one event with its pre-marshalled answers.
type eventData struct {
	ticker, series string
	markets        []*marketData
	rawFlat        []byte             // event object without markets
	bodies         func() eventBodies // built on first use: they are large for big events
}

type eventBodies struct {
	rawNested  []byte // event object with markets
	bodyFlat   []byte // GET /events/{t}
	bodyNested []byte // GET /events/{t}?with_nested_markets=true
}

// seriesData is one series with its pre-marshalled answers.
type seriesData struct {
	ticker string
	events []*eventData
	raw    []byte // the series object
	body   []byte // GET /series/{t}
}

// build expands a spec into pre-marshalled series, event and market data.
func (t *templates) build(spec seriesSpec) *seriesData {
	ev := &eventData{ticker: spec.eventTicker, series: spec.ticker}
	raws := make([][]byte, 0, len(spec.outcomes))
	for i, o := range spec.outcomes {
		m := t.market
		m.Ticker = spec.eventTicker + "-" + o.code
		if sample, ok := t.sampleMarkets[m.Ticker]; ok {
			m = sample
		} else {
			m.EventTicker = spec.eventTicker
			m.Title = spec.marketTitle
			m.YesSubTitle, m.NoSubTitle = o.label, o.label
			m.CustomStrike = map[string]string{"Word": o.label}
			m.RulesPrimary = spec.rulesPrimary(o.label)
			if spec.rulesSecondary != "" {
				m.RulesSecondary = spec.rulesSecondary
			}
			if spec.closeTime != "" {
				m.CloseTime = spec.closeTime
				m.ExpectedExpirationTime = spec.expectedExpiry
				m.ExpirationTime = spec.expiration
				m.LatestExpirationTime = spec.expiration
			}
			if spec.openTime != "" {
				m.OpenTime, m.CreatedTime, m.UpdatedTime = spec.openTime, spec.openTime, spec.openTime
			}
			setPrices(&m)
			if spec.finish != nil {
				spec.finish(i, &m)
			}
		}
		md := &marketData{
			ticker: m.Ticker,
			event:  m.EventTicker,
			series: spec.ticker,
			status: m.Status,
			raw:    mustMarshal(m),
			book:   bookFor(m),
			hist:   newMarketHistory(m, spec.ticker),
		}
		md.body = wrap("market", md.raw)
		md.bookBody = mustMarshal(orderbook{md.book})
		ev.markets = append(ev.markets, md)
		raws = append(raws, md.raw)
	}
	e := t.event
	e.EventTicker = spec.eventTicker
	e.SeriesTicker = spec.ticker
	e.SubTitle = spec.eventSubTitle
	e.Title = spec.eventTitle
	e.MutuallyExclusive = spec.mutuallyExclusive
	e.Category = spec.category
	e.SettlementSources = spec.sources
	ev.rawFlat = mustMarshal(e)
	ev.bodies = eventBodiesOf(e, ev.rawFlat, raws)

	s := t.series
	s.Ticker = spec.ticker
	s.Frequency = spec.frequency
	s.Title = spec.title
	s.Category = spec.category
	s.Categories = spec.categories
	s.Tags = spec.tags
	s.SettlementSources = spec.sources
	s.ContractURL = spec.contractURL
	s.ContractTermsURL = spec.termsURL
	sd := &seriesData{ticker: spec.ticker, events: []*eventData{ev}, raw: mustMarshal(s)}
	sd.body = wrap("series", sd.raw)
	return sd
}

// setPrices fills the price, size and volume fields of a generated market
// with values derived deterministically from its ticker.
func setPrices(m *market) {
	r := newPRNG(m.Ticker)
	bid := r.between(2, 94)
	spread := r.between(1, 4)
	ask := bid + spread
	last := r.between(bid, ask)
	vol := r.between(100, 9000)
	prevBid := min(max(bid+r.between(-2, 2), 1), 94)

	m.YesBidDollars = dollars(bid)
	m.YesBidSizeFP = contracts(10 * r.between(1, 60))
	m.YesAskDollars = dollars(ask)
	m.YesAskSizeFP = contracts(r.between(5, 400))
	m.NoBidDollars = dollars(100 - ask)
	m.NoAskDollars = dollars(100 - bid)
	m.LastPriceDollars = dollars(last)
	m.VolumeFP = contracts(vol)
	m.Volume24hFP = contracts(r.between(0, vol/10))
	m.OpenInterestFP = contracts(vol * r.between(50, 95) / 100)
	m.PreviousYesBidDollars = dollars(prevBid)
	m.PreviousYesAskDollars = dollars(prevBid + spread)
	m.PreviousPriceDollars = dollars(min(max(last+r.between(-2, 2), 1), 99))
}

// bookFor derives a three-level order book consistent with the market's top
// of book: the best YES bid is yes_bid at yes_bid_size, the best NO bid is
// no_bid at yes_ask_size (a YES ask is a NO bid). For the sample market
// KXEARNINGSMENTIONMETA-26JUN30-VR this reproduces samples/orderbook.json.
func bookFor(m market) bookSides {
	side := func(best int, bestSize string, deeper ...string) [][2]string {
		levels := make([][2]string, 0, 3)
		for i, off := range []int{3, 1} {
			if p := best - off; p >= 1 {
				levels = append(levels, [2]string{dollars(p), deeper[i]})
			}
		}
		return append(levels, [2]string{dollars(best), bestSize})
	}
	return bookSides{
		YesDollars: side(cents(m.YesBidDollars), m.YesBidSizeFP, "500.00", "210.00"),
		NoDollars:  side(cents(m.NoBidDollars), m.YesAskSizeFP, "800.00", "120.00"),
	}
}

// dollars formats a price in cents the way Kalshi does: "0.3300".
func dollars(c int) string { return fmt.Sprintf("%d.%02d00", c/100, c%100) }

// contracts formats a contract count the way Kalshi does: "150.00".
func contracts(n int) string { return strconv.Itoa(n) + ".00" }

// cents parses a "0.3300"-style price; malformed input yields 0.
func cents(d string) int {
	f, err := strconv.ParseFloat(d, 64)
	if err != nil {
		return 0
	}
	return int(math.Round(f * 100))
}

// prng is a splitmix64 generator; it makes generated data a pure function
// of the ticker, independent of Go's math/rand implementation.
type prng uint64

func newPRNG(seed string) *prng {
	h := fnv.New64a()
	h.Write([]byte(seed))
	p := prng(h.Sum64())
	return &p
}

func (p *prng) next() uint64 {
	*p += 0x9e3779b97f4a7c15
	z := uint64(*p)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// between returns a value in [lo, hi].
func (p *prng) between(lo, hi int) int { return lo + int(p.next()%uint64(hi-lo+1)) }

// mustMarshal marshals v without HTML escaping (Kalshi sends "Q&A", not
// "Q\u0026A").
func mustMarshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("kalshitest: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// wrap returns {"key":raw}.
func wrap(key string, raw []byte) []byte {
	return concat([]byte(`{"`+key+`":`), raw, []byte(`}`))
}

// concat returns the concatenation of parts in a new slice.
func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// joinArray returns the JSON array of the given pre-marshalled elements.
func joinArray(raws [][]byte) []byte {
	n := 2
	for _, r := range raws {
		n += len(r) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, r := range raws {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	return append(b, ']')
}

// universe is an immutable snapshot of the served data. AddSeries replaces
// it wholesale (copy on write), so request handlers never lock.
type universe struct {
	series     []*seriesData
	seriesBy   map[string]*seriesData
	events     []*eventData
	eventBy    map[string]*eventData
	markets    []*marketData
	marketBy   map[string]*marketData
	seriesList []byte // GET /series

	// allTrades is every trade of every market, newest first (trades.go);
	// built on first use.
	allTrades func() []*trade
}

func newUniverse(series []*seriesData) *universe {
	u := &universe{
		series:   series,
		seriesBy: make(map[string]*seriesData, len(series)),
		eventBy:  make(map[string]*eventData, len(series)),
		marketBy: make(map[string]*marketData),
	}
	raws := make([][]byte, len(series))
	for i, s := range series {
		raws[i] = s.raw
		u.seriesBy[s.ticker] = s
		for _, e := range s.events {
			u.events = append(u.events, e)
			u.eventBy[e.ticker] = e
			for _, m := range e.markets {
				u.markets = append(u.markets, m)
				u.marketBy[m.ticker] = m
			}
		}
	}
	u.seriesList = wrap("series", joinArray(raws))
	u.allTrades = sync.OnceValue(u.mergeTrades)
	return u
}

// with returns a copy of u in which s replaces the series with the same
// ticker, or is appended after the existing series.
func (u *universe) with(s *seriesData) *universe {
	series := make([]*seriesData, 0, len(u.series)+1)
	replaced := false
	for _, old := range u.series {
		if old.ticker == s.ticker {
			old, replaced = s, true
		}
		series = append(series, old)
	}
	if !replaced {
		series = append(series, s)
	}
	return newUniverse(series)
}

// statusMatches reports whether a market status as found in responses
// (initialized, inactive, active, closed, determined, disputed, amended,
// finalized) belongs to a value of the status filter vocabulary of
// GET /markets and GET /events (unopened, open, paused, closed, settled).
func statusMatches(filter, status string) bool {
	switch filter {
	case "unopened":
		return status == "initialized"
	case "open":
		return status == "active"
	case "paused":
		return status == "inactive"
	case "closed":
		return status == "closed"
	case "settled":
		return status == "determined" || status == "disputed" || status == "amended" || status == "finalized"
	}
	return false
}

// splitList splits comma-separated query values, dropping empty items.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
