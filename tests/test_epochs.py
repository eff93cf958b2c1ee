from streamload.epochs import EpochClock


def test_keras_fit_sequence_counts_epochs_from_zero() -> None:
    clock = EpochClock()
    clock.batch_read()  # Keras peeks batches 0 and 1 for the output signature
    clock.end()  # fit() resets its iterator: an unpaired on_epoch_end
    seen = []
    for _ in range(3):
        clock.begin()
        seen.append(clock.epoch)
        clock.batch_read()
        clock.end()
    assert seen == [0, 1, 2] and clock.epoch == 3


def test_evaluate_reset_before_each_validation_is_taken_back() -> None:
    clock = EpochClock()
    for expected in range(3):
        clock.end()  # reset
        clock.begin()
        assert clock.epoch == expected
        clock.end()


def test_manual_loop_calling_only_on_epoch_end_advances() -> None:
    clock = EpochClock()
    for expected in range(1, 4):
        clock.batch_read()
        clock.end()
        assert clock.epoch == expected


def test_set_clears_pending_state() -> None:
    clock = EpochClock()
    clock.end()
    clock.set(7)
    clock.begin()
    assert clock.epoch == 7
