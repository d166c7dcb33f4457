"""DDR4 and host-link timing: how many core cycles one DRAM access costs, and how long the host takes
to move a token's input vector into the board's DDR4 (paper App. A, Tables 4-5; docs/accelerator.md).

The measured design reads DDR4 without bursts, one 8-bit access at a time, one request in flight per
requester: each access is a request/acknowledge round trip of `access_ns`, and the synchronous core
sees the acknowledge on a clock edge, so

    cycles per access = ceil((access_ns + arbitration_ns + queueing_ns) * f_clk)          (1)

This quantisation is what Table 5's cycle counts show: with the block's real weight bytes (2-bit
codes, the E8 GLU width) the paper's runtimes give 3.03 cycles/byte at 60 MHz but 1.88 and 1.85 at
54 and 52 MHz: 3 cycles per access at 60 MHz and 2 at 54/52 MHz, which (1) gives exactly when
access_ns lies in (2 cycles at 60 MHz, 2 cycles at 54 MHz] = (33.3, 37.0] ns. No linear model
(a * bytes + b * rows, or cycles/byte = a + tau * f) fits all three rows; the clock quantum does. We take 35 ns (CALIBRATED #1); every value in that interval
gives the same cycles.

The channel itself is far from busy: each access, whatever its useful width (8 bits or 512), occupies
the 64-bit DDR4-2400 data bus for one BL8 burst, 8 beats / 2.4 GT/s = 3.33 ns, while a core asks
for one access per ~35 ns. Cores sharing a channel add (a) one arbitration stage per doubling of
requesters and (b) M/D/1 queueing at utilisation rho = k * burst / interval. Both stay inside the
clock quantum of (1) for up to 7 cores per channel at 60 MHz, which is why Table 4's core latency is
flat from 1 to 26 cores. Once accesses are 512 bits wide the same bus carries 64x more useful data
per access and the channel, not the latency, becomes the roof (report.py's roofline).

Host -> DDR4 (Table 4's "DDR4 latency"): the host writes the input vector through the MMIO bridge,
one 64-bit word per posted write of `mmio_word_us` (CALIBRATED #2, from Table 4's one-core 0.09 ms
for a d=512 float32 vector = 256 words -> 0.352 us/word). The paper estimates that each extra core
on a channel doubles that channel's arbitration and buffering logic; the host shares the channels,
so its transfer takes 2^(k-1) times longer with k cores on the busiest channel. With 4 channels and
1/8/16/26 cores, k = 1/2/4/7 and the factor is 1/2/8/64: 0.09/0.18/0.72/5.76 ms, Table 4 exactly.
"""
import math
from dataclasses import dataclass

CALIBRATED = {
    "access_ns": ("35.0 ns", "one single-beat DDR4 request/acknowledge round trip; Table 5 puts it in "
                             "(33.3, 37.0] ns (3 cycles at 60 MHz, 2 at 54 and 52 MHz)"),
    "mmio_word_us": ("0.3516 us", "one 64-bit posted MMIO write host -> PAC DDR4; Table 4 one-core row "
                                  "(0.09 ms for a 512-element float32 vector = 256 words)"),
}


@dataclass(frozen=True)
class DDR4:
    """The board's memory system as one core sees it. Times in ns unless named otherwise."""
    access_ns: float = 35.0             # CALIBRATED #1 (see module docstring)
    mmio_word_us: float = 0.09e3 / 256  # CALIBRATED #2: 0.3516 us per 64-bit MMIO word
    burst_ns: float = 8 / 2.4           # data-bus time of one BL8 access on DDR4-2400 (JEDEC; not fitted)
    bus_bytes: int = 64                 # bytes one BL8 burst moves on the 64-bit channel
    arbiter_stage_ns: float = 1e3 / 300 # one stage of a 300 MHz arbitration tree (assumption, not fitted)
    channels: int = 4                   # the D5005 has four DDR4 channels; a core attaches to one

    def __post_init__(self):
        for name in ("access_ns", "mmio_word_us", "burst_ns", "arbiter_stage_ns"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DDR4.{name} must be > 0, got {getattr(self, name)!r}")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"DDR4.channels must be an int >= 1, got {self.channels!r}")

    # ------------------------------------------------------------------------
    def cores_per_channel(self, cores):
        """Cores on the busiest channel when `cores` are spread round-robin over the channels."""
        _check_cores(cores)
        return math.ceil(cores / self.channels)

    def bus_ns(self, access_bits):
        """Data-bus occupancy of one access: one BL8 burst, more for accesses wider than the bus."""
        return self.burst_ns * max(1, math.ceil(access_bits / (8 * self.bus_bytes)))

    def access_cycles(self, clock_mhz, access_bits=8, cores=1):
        """Core cycles one access costs a core whose channel it shares with the other cores, eq. (1).

        Solved as a fixed point: the queueing delay depends on how often the k requesters ask, which
        depends on the cycles per access. Falls back to the bandwidth bound when the bus saturates."""
        _check_clock(clock_mhz)
        k = self.cores_per_channel(cores)
        bus = self.bus_ns(access_bits)
        arbitration = self.arbiter_stage_ns * math.ceil(math.log2(k)) if k > 1 else 0.0
        period = 1e3 / clock_mhz                                       # ns per core cycle
        cycles = math.ceil((self.access_ns + arbitration) / period - 1e-9)
        if k == 1:                                                     # one requester never queues behind itself,
            return max(cycles, math.ceil(bus / period - 1e-9))         # but a wide access may outlast the round trip
        for _ in range(50):
            rho = k * bus / (cycles * period)                          # bus utilisation
            if rho >= 1.0:                                             # saturated: the bus is the roof
                return max(cycles, math.ceil(k * bus / period - 1e-9))
            wait = rho / (2 * (1 - rho)) * bus                         # M/D/1 mean queueing delay
            new = math.ceil((self.access_ns + arbitration + wait) / period - 1e-9)
            if new == cycles:
                return cycles
            cycles = new
        return cycles

    def channel_bytes_per_s(self):
        """Peak bytes/s of one channel's data bus (all bursts used in full)."""
        return self.bus_bytes / (self.burst_ns * 1e-9)

    def host_to_ddr_ms(self, nbytes, cores=1):
        """Time for the host to write `nbytes` into one core's DDR4 buffer through MMIO (Table 4 rule)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        k = self.cores_per_channel(cores)
        words = math.ceil(nbytes / 8)
        return words * self.mmio_word_us * 2 ** (k - 1) / 1e3


def _check_cores(cores):
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")


def _check_clock(clock_mhz):
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not 0 < clock_mhz <= 1000:
        raise ValueError(f"clock_mhz must be a number in (0, 1000] MHz, got {clock_mhz!r}")
