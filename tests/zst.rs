//! Zero-size blocks through the `Allocator` trait.
//!
//! `allocator_api2`'s `Box` does not allocate for a zero-sized `T` (it uses
//! `NonNull::dangling()`), but its `Drop` still calls
//! `deallocate(dangling, Layout { size: 0, .. })`. So Rulloc's
//! `Allocator::deallocate` must accept a dangling pointer with a zero-size
//! layout and do nothing, as `std`'s `Global` does (an allocator that looks
//! up metadata from every pointer it is given crashes here).

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use common::*;
use rulloc::Rulloc;

#[test]
fn box_of_zero_sized_types() {
    let a = Rulloc::default();
    let unit = ABox::new_in((), &a);
    let empty = ABox::new_in([0u64; 0], &a);
    #[derive(Debug, PartialEq)]
    struct Marker;
    let marker = ABox::new_in(Marker, &a);
    assert_eq!(*marker, Marker);
    drop((unit, empty, marker));
    // The allocator is still fine afterwards.
    let b = ABox::new_in([1u8; 100], &a);
    assert!(b.iter().all(|&x| x == 1));
}

#[test]
fn deallocate_dangling_zero_size() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    for shift in 0..=12 {
        let layout = Layout::from_size_align(0, 1 << shift).unwrap();
        // A dangling pointer aligned to the layout, as `Box<ZST>` uses.
        let dangling =
            NonNull::new(core::ptr::without_provenance_mut::<u8>(layout.align())).unwrap();
        // SAFETY: zero-size blocks need no allocation; the `Allocator`
        // contract lets a zero-size layout "fit" a dangling pointer, which
        // is what `allocator_api2::boxed::Box` relies on.
        unsafe { a.deallocate(dangling, layout) };
    }
    let p = a.allocate_bytes(24, 8);
    assert_aligned(p, 8, "after zero-size deallocations");
    // SAFETY: `p` is live.
    unsafe { a.deallocate_bytes(p) };
}

#[test]
fn vec_of_zero_sized_types() {
    let a = Rulloc::default();
    let mut v: AVec<(), &Rulloc> = AVec::new_in(&a);
    for _ in 0..1000 {
        v.push(());
    }
    assert_eq!(v.len(), 1000);
    v.shrink_to_fit();
    let boxed = v.into_boxed_slice();
    assert_eq!(boxed.len(), 1000);
}
