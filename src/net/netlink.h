// A raw NETLINK_ROUTE socket and request builder: one request at a time, acknowledged, with the
// kernel's extended-ack text in errors. Internal to the net module.
#pragma once

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::net::nl {

// One request message. Attributes are appended in order; nests are closed with end_nest.
class Message {
 public:
  Message(uint16_t type, uint16_t flags);

  // A fixed struct: the family header (ifinfomsg, ifaddrmsg, rtmsg) right after the netlink
  // header, or a nested one such as the veth peer's ifinfomsg inside VETH_INFO_PEER.
  template <class T>
  void put_struct(const T& hdr) {
    append(&hdr, sizeof hdr);
  }
  void put(uint16_t type, const void* data, size_t len);
  void put_u32(uint16_t type, uint32_t v) { put(type, &v, sizeof v); }
  void put_str(uint16_t type, std::string_view s);  // NUL-terminated
  size_t begin_nest(uint16_t type);
  void end_nest(size_t offset);

  nlmsghdr* header() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  const char* data() const { return buf_.data(); }
  size_t size() const { return buf_.size(); }

 private:
  void append(const void* data, size_t len);
  void pad();
  std::vector<char> buf_;
};

// Attributes of one message, indexed by type (later duplicates win; unknown types ignored).
class Attrs {
 public:
  Attrs(const void* start, size_t len, uint16_t max_type);
  const rtattr* get(uint16_t type) const { return type < attrs_.size() ? attrs_[type] : nullptr; }
  bool has(uint16_t type) const { return get(type) != nullptr; }
  uint32_t u32(uint16_t type, uint32_t fallback = 0) const;
  std::string str(uint16_t type) const;

 private:
  std::vector<const rtattr*> attrs_;
};

class Socket {
 public:
  // Opens a socket in the calling thread's network namespace.
  static Result<Socket> open();
  // SAFETY: takes ownership of a NETLINK_ROUTE socket fd (e.g. one opened inside another netns).
  explicit Socket(UniqueFd fd);
  Socket(Socket&&) noexcept = default;
  Socket& operator=(Socket&&) noexcept = default;

  // Sends the request with NLM_F_ACK and waits for the acknowledgement. Replies of the request's
  // own (e.g. RTM_GETLINK's RTM_NEWLINK) go to on_reply when given. A kernel refusal becomes an
  // Error with its errno and the strerror text, plus the kernel's extended-ack message if any;
  // callers add what they were doing.
  Status request(Message& msg, const std::function<void(const nlmsghdr*)>& on_reply = {});
  // Sends a NLM_F_DUMP request and calls on_reply for every message until NLMSG_DONE.
  Status dump(Message& msg, const std::function<void(const nlmsghdr*)>& on_reply);

  int fd() const { return fd_.get(); }

 private:
  Status send(Message& msg);
  // Reads replies for the current sequence number until the ack (or DONE for dumps).
  Status receive(bool dump, const std::function<void(const nlmsghdr*)>& on_reply);

  UniqueFd fd_;
  uint32_t seq_ = 0;
  std::vector<char> rx_;
};

}  // namespace prewarm::net::nl
