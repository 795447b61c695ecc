// NETLINK_ROUTE request/ack plumbing: message building, sending, reading acks and dumps.
#include "net/netlink.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace prewarm::net::nl {
namespace {

constexpr size_t kRxBuffer = 64 * 1024;

std::string extack_message(const nlmsghdr* h, const nlmsgerr* err) {
  if (!(h->nlmsg_flags & NLM_F_ACK_TLVS)) return {};
  size_t off = sizeof(nlmsgerr);
  if (!(h->nlmsg_flags & NLM_F_CAPPED)) off += err->msg.nlmsg_len - NLMSG_HDRLEN;
  size_t payload = h->nlmsg_len - NLMSG_HDRLEN;
  if (off >= payload) return {};
  Attrs tlvs(reinterpret_cast<const char*>(err) + off, payload - off, NLMSGERR_ATTR_MAX);
  return tlvs.str(NLMSGERR_ATTR_MSG);
}

}  // namespace

Message::Message(uint16_t type, uint16_t flags) {
  buf_.reserve(256);
  nlmsghdr h{};
  h.nlmsg_type = type;
  h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  append(&h, sizeof h);
}

void Message::append(const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  buf_.insert(buf_.end(), p, p + len);
  pad();
  header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
}

void Message::pad() { buf_.resize(NLMSG_ALIGN(buf_.size()), '\0'); }

void Message::put(uint16_t type, const void* data, size_t len) {
  rtattr a{};
  a.rta_type = type;
  a.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
  const char* p = reinterpret_cast<const char*>(&a);
  buf_.insert(buf_.end(), p, p + sizeof a);
  if (len > 0) {
    const char* d = static_cast<const char*>(data);
    buf_.insert(buf_.end(), d, d + len);
  }
  pad();
  header()->nlmsg_len = static_cast<uint32_t>(buf_.size());
}

void Message::put_str(uint16_t type, std::string_view s) {
  std::string z(s);
  put(type, z.c_str(), z.size() + 1);
}

size_t Message::begin_nest(uint16_t type) {
  size_t off = buf_.size();
  put(type, nullptr, 0);
  return off;
}

void Message::end_nest(size_t offset) {
  auto* a = reinterpret_cast<rtattr*>(buf_.data() + offset);
  a->rta_len = static_cast<unsigned short>(buf_.size() - offset);
}

Attrs::Attrs(const void* start, size_t len, uint16_t max_type) : attrs_(max_type + 1u, nullptr) {
  auto* a = static_cast<const rtattr*>(start);
  int left = static_cast<int>(len);
  for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    uint16_t type = a->rta_type & NLA_TYPE_MASK;
    if (type <= max_type) attrs_[type] = a;
  }
}

uint32_t Attrs::u32(uint16_t type, uint32_t fallback) const {
  const rtattr* a = get(type);
  if (a == nullptr || RTA_PAYLOAD(a) < sizeof(uint32_t)) return fallback;
  uint32_t v;
  std::memcpy(&v, RTA_DATA(a), sizeof v);
  return v;
}

std::string Attrs::str(uint16_t type) const {
  const rtattr* a = get(type);
  if (a == nullptr) return {};
  const char* p = static_cast<const char*>(RTA_DATA(a));
  return std::string(p, strnlen(p, RTA_PAYLOAD(a)));
}

Result<Socket> Socket::open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd.valid()) return Error::sys("open NETLINK_ROUTE socket", errno);
  return Socket(std::move(fd));
}

Socket::Socket(UniqueFd fd) : fd_(std::move(fd)) {
  // Best effort: without these the errors just lack the kernel's explanation.
  int one = 1;
  ::setsockopt(fd_.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  ::setsockopt(fd_.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
}

Status Socket::send(Message& msg) {
  nlmsghdr* h = msg.header();
  h->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    ssize_t n = ::sendto(fd_.get(), msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                         sizeof kernel);
    if (n >= 0) return {};
    if (errno != EINTR) return Error::sys("send netlink request", errno);
  }
}

Status Socket::request(Message& msg, const std::function<void(const nlmsghdr*)>& on_reply) {
  msg.header()->nlmsg_flags |= NLM_F_ACK;
  PW_TRY(send(msg));
  return receive(false, on_reply);
}

Status Socket::dump(Message& msg, const std::function<void(const nlmsghdr*)>& on_reply) {
  msg.header()->nlmsg_flags |= NLM_F_DUMP;
  PW_TRY(send(msg));
  return receive(true, on_reply);
}

Status Socket::receive(bool dump, const std::function<void(const nlmsghdr*)>& on_reply) {
  if (rx_.size() < kRxBuffer) rx_.resize(kRxBuffer);
  for (;;) {
    ssize_t n = ::recv(fd_.get(), rx_.data(), rx_.size(), MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("receive netlink reply", errno);
    }
    if (static_cast<size_t>(n) > rx_.size())
      return Error("netlink reply of " + std::to_string(n) + " bytes did not fit the buffer");
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(rx_.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq_) continue;  // a stale reply to an earlier, abandoned request
      if (h->nlmsg_type == NLMSG_DONE) {
        // A dump that failed part-way says so in DONE's payload.
        int e = 0;
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof e)) std::memcpy(&e, NLMSG_DATA(h), sizeof e);
        if (e < 0) return Error(std::strerror(-e), -e);
        return {};
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Error("truncated netlink ack");
        auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (err->error == 0) {
          if (!dump) return {};
          continue;
        }
        int e = -err->error;
        std::string text = std::strerror(e);
        std::string ext = extack_message(h, err);
        if (!ext.empty()) text += " (" + ext + ")";
        return Error(std::move(text), e);
      }
      if (on_reply) on_reply(h);
    }
  }
}

}  // namespace prewarm::net::nl
