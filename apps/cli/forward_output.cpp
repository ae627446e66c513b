#include "forward_output.hpp"

#include <rstream/core/text.hpp>

#include <nlohmann/json.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>

namespace rstream::apps {

namespace {

using json = nlohmann::json;

/// The wall clock as text, formatted once a second however many events ask for it.
class second_clock {
public:
    /// "10:00:00" in local time.
    const std::string& local() {
        refresh();
        return local_;
    }
    /// "2026-11-24T10:00:00Z".
    const std::string& iso() {
        refresh();
        return iso_;
    }

private:
    void refresh() {
        auto t = std::time(nullptr);
        if (t == at_ && !local_.empty())
            return;
        at_ = t;
        std::tm tm{};
        char buf[32];
        localtime_r(&t, &tm);
        std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
        local_ = buf;
        gmtime_r(&t, &tm);
        std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        iso_ = buf;
    }

    std::time_t at_ = 0;
    std::string local_, iso_;
};

second_clock& wall_clock() {
    static second_clock c;
    return c;
}

std::string clock_text() { return wall_clock().local(); }

/// One JSON object on one line, its members written in the order given (by the callers:
/// alphabetical, as the objects nlohmann::json writes for the rarer events). Strings from
/// peers (paths, methods) are escaped so the line is valid JSON whatever bytes they hold.
class json_line {
public:
    explicit json_line(std::string& out) : out_(out) { out_ += '{'; }
    json_line& str(std::string_view key, std::string_view value) {
        name(key);
        out_ += '"';
        text::append_json_escaped(out_, value);
        out_ += '"';
        return *this;
    }
    json_line& num(std::string_view key, long long value) {
        name(key);
        out_ += std::to_string(value);
        return *this;
    }
    void end() { out_ += "}\n"; }

private:
    void name(std::string_view key) {
        if (!first_)
            out_ += ',';
        first_ = false;
        out_ += '"';
        out_ += key;  // ours: never needs escaping
        out_ += "\":";
    }
    std::string& out_;
    bool first_ = true;
};

std::string human_bytes(std::uint64_t n) {
    char buf[32];
    if (n < 1024)
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
    else if (n < 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
    else if (n < 1024ull * 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.1f MiB", n / (1024.0 * 1024));
    else
        std::snprintf(buf, sizeof buf, "%.2f GiB", n / (1024.0 * 1024 * 1024));
    return buf;
}

/// Prints what happens, as text lines or one JSON object per event. Stream events are
/// gathered and written together once the current burst of events has run (a loaded
/// tunnel reports a line per request); anything else is written at once.
class line_output final : public forward_output {
public:
    explicit line_output(bool json_output) : json_(json_output) {}

    void attach(boost::asio::any_io_executor ex) override { ex_ = std::move(ex); }
    void finish() override { flush(); }

    /// A rare event: `fields` as JSON (peer text made valid UTF-8), or `text`.
    void emit(const std::string& event, json fields, const std::string& line) {
        if (json_) {
            fields["event"] = event;
            fields["time"] = wall_clock().iso();
            pending_ += fields.dump(-1, ' ', false, json::error_handler_t::replace);
            pending_ += '\n';
        } else {
            pending_ += text::printable(line);
            pending_ += '\n';
        }
        flush();
    }

    void online(const tunnel_properties& p, const std::string& target, const std::string& engine,
                const std::string& streams, bool again) override {
        auto fwd = forwarding_address(p);
        if (json_) {
            emit("tunnel.online",
                 {{"tunnel_id", p.id}, {"name", p.name}, {"forwarding", fwd}, {"target", target}, {"engine", engine},
                  {"streams", streams}, {"reconnected", again}},
                 "");
            return;
        }
        flush();  // what happened before comes first
        std::printf("%s\n", again ? "rstream forward: back online" : "rstream forward");
        std::printf("  status       online\n");
        std::printf("  tunnel id    %s\n", p.id.c_str());
        std::printf("  forwarding   %s -> %s\n", fwd.c_str(), target.c_str());
        std::printf("  engine       %s\n", engine.c_str());
        std::printf("  streams      %s\n\n", streams.c_str());
        std::fflush(stdout);
    }

    void stream_event(const forward_event& e) override {
        if (json_)
            json_event(e);
        else
            text_event(e);
        if (e.what == forward_event::kind::target_unreachable || !ex_) {
            flush();
            return;
        }
        if (flush_posted_)
            return;
        flush_posted_ = true;
        boost::asio::post(ex_, [this] {
            flush_posted_ = false;
            flush();
        });
    }

    void status(const status_event& e) override {
        using s = channel_status;
        switch (e.status) {
        case s::disconnected:
            emit("channel.disconnected", {{"message", e.message}}, clock_text() + "  " + e.message);
            break;
        case s::reconnecting:
            emit("channel.reconnecting", {{"retry_in_ms", e.retry_in.count()}},
                 clock_text() + "  reconnecting in " + std::to_string(e.retry_in.count()) + " ms");
            break;
        case s::tunnel_lost:
            emit("tunnel.lost", {{"message", e.message}}, clock_text() + "  " + e.message);
            break;
        case s::server_message:
            emit("engine.message", {{"message", e.message}}, clock_text() + "  engine: " + e.message);
            break;
        default:
            break;
        }
    }

    void error(const std::string& message) override {
        if (json_)
            emit("error", {{"message", message}}, "");
        std::fprintf(stderr, "rstream forward: error: %s\n", message.c_str());
    }

private:
    void json_event(const forward_event& e) {
        using k = forward_event::kind;
        json_line j(pending_);
        const std::string& time = wall_clock().iso();
        switch (e.what) {
        case k::opened:
            j.str("event", "stream.opened").str("source_ip", e.source_ip).str("stream_id", e.stream_id);
            break;
        case k::closed:
            j.num("bytes_in", static_cast<long long>(e.bytes_in))
                .num("bytes_out", static_cast<long long>(e.bytes_out))
                .num("duration_ms", e.duration.count())
                .str("event", "stream.closed")
                .str("source_ip", e.source_ip)
                .str("stream_id", e.stream_id);
            break;
        case k::target_unreachable:
            j.str("error", e.error)
                .str("event", "stream.error")
                .str("source_ip", e.source_ip)
                .str("stream_id", e.stream_id);
            break;
        case k::http_request:
            j.num("duration_ms", e.http.duration.count())
                .str("event", "http.request")
                .str("method", e.http.method)
                .str("path", e.http.target)
                .str("source_ip", e.source_ip)
                .num("status", e.http.status)
                .str("stream_id", e.stream_id);
            break;
        }
        j.str("time", time).end();
    }

    void text_event(const forward_event& e) {
        using k = forward_event::kind;
        std::string_view id = std::string_view(e.stream_id).substr(0, 8);
        std::string& o = pending_;
        o += clock_text();
        switch (e.what) {
        case k::opened:
            o += "  stream ";
            o += id;
            o += "  from ";
            o += e.source_ip.empty() ? "?" : e.source_ip;
            o += "  opened";
            break;
        case k::closed:
            o += "  stream ";
            o += id;
            o += "  closed  in " + human_bytes(e.bytes_in) + "  out " + human_bytes(e.bytes_out) + "  " +
                 std::to_string(e.duration.count()) + " ms";
            break;
        case k::target_unreachable:
            o += "  stream ";
            o += id;
            o += "  closed: " + text::printable(e.error) + " (the tunnel stays up)";
            break;
        case k::http_request:
            o += "  " + text::printable(e.http.method) + " " + text::printable(e.http.target) + "  " +
                 std::to_string(e.http.status) + "  " + std::to_string(e.http.duration.count()) + " ms";
            break;
        }
        o += '\n';
    }

    void flush() {
        if (!pending_.empty()) {
            std::fwrite(pending_.data(), 1, pending_.size(), stdout);
            pending_.clear();
            if (pending_.capacity() > 64 * 1024)
                std::string().swap(pending_);  // a burst's lines are not kept for the next
        }
        std::fflush(stdout);
    }

    bool json_;
    boost::asio::any_io_executor ex_;
    bool flush_posted_ = false;
    std::string pending_;  // lines not yet written
};


/// The live view: the whole screen is redrawn, at once for a change of status and at most
/// ten times a second for connections and requests (a loaded tunnel has thousands a
/// second; the screen shows the counters and the last ten).
class live_view final : public forward_output {
public:
    void attach(boost::asio::any_io_executor ex) override { ex_ = std::move(ex); }

    void online(const tunnel_properties& p, const std::string& target, const std::string& engine,
                const std::string& streams, bool again) override {
        props_ = p;
        target_ = target;
        engine_ = engine;
        streams_ = streams;
        status_ = again ? "online (reconnected)" : "online";
        render();
    }

    void stream_event(const forward_event& e) override {
        using k = forward_event::kind;
        std::string who = e.source_ip.empty() ? "?" : e.source_ip;
        switch (e.what) {
        case k::opened:
            ++open_;
            ++total_;
            break;
        case k::closed:
            if (open_ > 0)
                --open_;
            bytes_in_ += e.bytes_in;
            bytes_out_ += e.bytes_out;
            push(clock_text() + "  " + pad(who, 16) + "  in " + pad(human_bytes(e.bytes_in), 10) + " out " +
                 pad(human_bytes(e.bytes_out), 10) + " " + std::to_string(e.duration.count()) + " ms");
            break;
        case k::target_unreachable:
            ++total_;
            push(clock_text() + "  " + pad(who, 16) + "  " + text::printable(e.error));
            break;
        case k::http_request:
            ++requests_;
            push(clock_text() + "  " + pad(text::printable(e.http.method), 7) + " " +
                 pad(text::printable(e.http.target), 32) + " " +
                 std::to_string(e.http.status) + "  " + std::to_string(e.http.duration.count()) + " ms");
            break;
        }
        changed();
    }

    void status(const status_event& e) override {
        using s = channel_status;
        if (e.status == s::disconnected)
            status_ = "reconnecting: " + text::printable(e.message);
        else if (e.status == s::reconnecting)
            status_ = "reconnecting in " + std::to_string(e.retry_in.count()) + " ms";
        else if (e.status == s::tunnel_lost || e.status == s::server_message)
            push(clock_text() + "  " + text::printable(e.message));
        else
            return;
        render();
    }

    void error(const std::string& message) override {
        status_ = "failed";
        render();
        std::fprintf(stderr, "rstream forward: error: %s\n", message.c_str());
    }

    void finish() override {
        if (render_pending_)
            render();  // the last counts
        std::printf("\n");
        std::fflush(stdout);
    }

private:
    using clock = std::chrono::steady_clock;
    static constexpr clock::duration render_interval = std::chrono::milliseconds(100);

    /// Connections or requests changed: redraw now, or once the interval since the last
    /// redraw has passed.
    void changed() {
        auto now = clock::now();
        if (!ex_ || now - last_render_ >= render_interval) {
            render();
            return;
        }
        if (render_pending_)
            return;
        render_pending_ = true;
        // The timer lives in its handler: nothing here outlives the io_context.
        auto timer = std::make_shared<boost::asio::steady_timer>(ex_, last_render_ + render_interval);
        timer->async_wait([this, timer](boost::system::error_code ec) {
            if (ec || !render_pending_)
                return;
            render();
        });
    }

    static std::string pad(std::string s, std::size_t n) {
        if (s.size() < n)
            s.append(n - s.size(), ' ');
        return s;
    }

    void push(std::string line) {
        recent_.push_front(std::move(line));
        if (recent_.size() > 10)
            recent_.pop_back();
    }

    void render() {
        render_pending_ = false;
        last_render_ = clock::now();
        std::string out = "\x1b[H\x1b[2J";  // home, clear screen
        out += "rstream forward                                        (Ctrl-C to quit)\n\n";
        out += "Status        " + status_ + "\n";
        out += "Tunnel id     " + props_.id + "\n";
        out += "Forwarding    " + forwarding_address(props_) + " -> " + target_ + "\n";
        out += "Engine        " + engine_ + "\n";
        out += "Streams       " + streams_ + "\n";
        out += "Connections   open " + std::to_string(open_) + "   total " + std::to_string(total_) + "   in " +
               human_bytes(bytes_in_) + "   out " + human_bytes(bytes_out_) + "\n";
        if (requests_ > 0)
            out += "HTTP requests " + std::to_string(requests_) + "\n";
        out += "\nRecent\n";
        for (const auto& l : recent_)
            out += "  " + l + "\n";
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::fflush(stdout);
    }

    tunnel_properties props_;
    std::string target_, engine_, streams_, status_ = "connecting";
    std::uint64_t open_ = 0, total_ = 0, bytes_in_ = 0, bytes_out_ = 0, requests_ = 0;
    std::deque<std::string> recent_;
    boost::asio::any_io_executor ex_;
    clock::time_point last_render_{};
    bool render_pending_ = false;
};

} // namespace

std::unique_ptr<forward_output> make_line_output(bool json) { return std::make_unique<line_output>(json); }
std::unique_ptr<forward_output> make_live_view() { return std::make_unique<live_view>(); }

} // namespace rstream::apps
