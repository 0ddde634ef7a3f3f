""" Key counts of each checkpoint layout for one variant: what checkpoint_filter_fn maps, keeps, drops and adds.

    python tools/layout_counts.py [VARIANT]   (default hrnet_w18)

Each layout's checkpoint is tests/test_layouts.py's: the synthetic timm checkpoint of the layout's head renamed
through the inverse mapping, with the sample task-head keys of FOREIGN_HEADS. Prints a markdown table.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))


def main(variant: str) -> None:
    import test_layouts as t
    from common import expected_state
    from target import layouts
    t.VARIANT = variant
    print('| layout | head | keys in file | renamed | same name | dropped | zero biases added | loaded |')
    print('|---|---|---|---|---|---|---|---|')
    for layout in t.LAYOUTS:
        foreign = t.foreign_checkpoint(layout)
        inner = foreign.get('state_dict', foreign)
        _, mapped, notes = layouts._map_checkpoint(foreign)
        dropped = sum(len(v) for k, v in notes.items() if k.startswith('dropped: ') and '(training state)' not in k)
        added = sum(len(v) for k, v in notes.items() if k.startswith('added: '))
        kept = [k for k in inner if k not in t.FOREIGN_HEADS[layout.name]]
        renamed = sum(1 for k in kept if layouts._rename(k, layout.renames) != k)
        assert len(mapped) == len(expected_state(variant, layout.head))
        print(f'| {layout.name} | {layout.head!r} | {len(inner)} | {renamed} | {len(kept) - renamed} | {dropped} | '
              f'{added} | {len(mapped)} |')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'hrnet_w18')
