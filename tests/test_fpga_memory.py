"""DDR4 model: the clock quantum of one round trip, contention, the host MMIO rule, bad inputs."""
import pytest

from fpga_model import DDR4


def test_round_trip_is_quantised_to_core_clock_edges():
    ddr = DDR4()                                                        # 35 ns
    assert [ddr.access_cycles(f) for f in (60, 54, 52, 100, 120)] == [3, 2, 2, 4, 5]   # ceil(35 ns * f)
    assert DDR4(access_ns=33.4).access_cycles(60) == 3 and DDR4(access_ns=33.3).access_cycles(60) == 2


def test_contention_adds_arbitration_and_queueing_and_saturates_at_the_bus():
    ddr = DDR4()
    assert ddr.cores_per_channel(1) == 1 and ddr.cores_per_channel(8) == 2 and ddr.cores_per_channel(26) == 7
    assert ddr.access_cycles(60, 8, 26) == 3                              # slack inside the 60 MHz quantum
    # a bus far too slow for 7 requesters: the bandwidth bound 7 * 100 ns = 700 ns -> 42 cycles at 60 MHz
    slow_bus = DDR4(burst_ns=100.0)
    assert slow_bus.access_cycles(60, 8, 26) == 42


def test_host_transfer_doubles_per_extra_core_on_a_channel():
    ddr = DDR4()
    one = ddr.host_to_ddr_ms(2048, 1)
    assert one == pytest.approx(0.09)
    assert [ddr.host_to_ddr_ms(2048, n) / one for n in (1, 8, 16, 26)] == pytest.approx([1, 2, 8, 64])


@pytest.mark.parametrize("call", [
    lambda: DDR4(access_ns=0),
    lambda: DDR4(channels=0),
    lambda: DDR4().access_cycles(0),
    lambda: DDR4().access_cycles(60, 8, 0),
    lambda: DDR4().host_to_ddr_ms(-1),
])
def test_bad_inputs_are_refused(call):
    with pytest.raises(ValueError):
        call()
